"""Command line of stage 2: ``python -m classify --features FILE`` (and ``compare``, ``report``,
``predict``, ``export``).

A thin shell over the library (:func:`classify.train_and_evaluate`, :func:`classify.compare`,
:func:`classify.predict`, :func:`classify.imagenet_predict`, :func:`classify.export_model`):
it turns text into values, prints what they return, and maps their exceptions to exit statuses
(settings 2, other failures 1, Ctrl-C 130).
"""

from __future__ import annotations

import os

# Files only, no display: set before anything imports matplotlib (the library never picks a
# backend, so a notebook keeps its inline one).
os.environ.setdefault("MPLBACKEND", "Agg")

import argparse  # noqa: E402 - after the backend is chosen
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402

from .classifiers import CLASSIFIERS  # noqa: E402
from .settings import add_arguments, keywords_of, whole  # noqa: E402

DESCRIPTION = """\
Grid-search a classifier on a feature file written by `python -m extract`: a stratified,
seeded train / test split; cross-validated search on the training rows only; the best
parameters refit on all training rows; a per-class precision / recall / F1 report on the
test rows (stdout).
"""

EPILOG = """\
models (default grid in brackets; --grid replaces it):
""" + "\n".join(
    f"  {spec.name:7} {spec.description} [{json.dumps(spec.grid)}]" for spec in CLASSIFIERS.values()
) + """

examples:
  python -m classify --features animals.hdf5
  python -m classify --features flowers17.hdf5 --model rf --json rf.json --save rf.joblib
  python -m classify --features flowers17.hdf5 --grid '{"C": [0.01, 0.1]}'
  python -m classify --features flowers17.hdf5 --model logreg rf xgb --json f17.json
  python -m classify compare f17.logreg.json f17.xgb.json --plots figures/
  python -m classify --features flowers17.hdf5 --model logreg head --html f17.html
  python -m classify --features f17_mnv2.hdf5 f17_mnv1.hdf5 --json fused.json --save fused.joblib
  python -m classify report f17.logreg.json f17.head.json --html f17.html
  python -m classify --features flowers17.hdf5 --model head logreg --save f17.joblib
  python -m classify --features f17_block15.hdf5 --model finetune --augment --tta --json ft.json
  python -m classify predict --model rf.joblib new_photos/ --output predictions.csv
  python -m classify predict --imagenet --backbone mobilenetv2 --weights W.weights.h5 photos/
  python -m classify export --model f17.head.keras --output f17_classifier.keras

With several models, --json and --save write one file per model, named <stem>.<model><suffix>.
The head is saved as a Keras model file: --save's name with the suffix .keras.

The test rows depend only on the labels, --test-size and --seed, and are saved with --json,
so runs of different models are scored on the same images.
From Python: from classify import train_and_evaluate, compare, predict.
Exit status: 0 done, 1 failure (message on stderr), 2 usage error, 130 interrupted.
"""

PREDICT_DESCRIPTION = """\
Predict the class of new images with a model saved by `python -m classify --save M.joblib`
(a head: M.keras).
Prints (or writes with --output) a CSV: path, predicted class, its probability, and the top 3
classes with theirs. Folders are searched for images recursively.

With --imagenet instead of --model, the pretrained backbone itself (with its top, the
1,000-class ImageNet classifier, at its native size) classifies the images, decoded as Keras'
decode_predictions does but from the class index shipped with featurebank (nothing is
downloaded but --weights imagenet). The CSV then has: path; for each rank k = 1..--top,
class_k (e.g. giant_panda), probability_k and wnid_k (its WordNet id, e.g. n02510455);
error (skipped: <reason> for an image that could not be decoded).
"""

PREDICT_EPILOG = """\
examples:
  python -m classify predict --model rf.joblib new_photos/ --output predictions.csv
  python -m classify predict --imagenet --backbone mobilenetv2 \\
      --weights mobilenetv2_1.0_224_imagenet.weights.h5 mug.jpg photos/
From Python: from classify import predict, imagenet_predict.
Exit status: 0 done, 1 failure (message on stderr), 2 usage error, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m classify",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # extend: -f a.hdf5 -f b.hdf5 fuses both, as --features a.hdf5 b.hdf5 does.
    p.add_argument("--features", "-f", required=True, metavar="FILE", nargs="+", action="extend",
                   help="feature file written by python -m extract; several files of the same "
                        "images are fused: rows joined on image path, each file's block scaled to "
                        "unit mean row norm (recorded), side by side")
    add_arguments(p)
    return p


@contextlib.contextmanager
def stderr_log() -> Iterator[None]:
    """The ``classify`` logger's INFO lines on stderr as ``classify: <message>``, for one run."""
    log = logging.getLogger("classify")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("classify: %(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def fail(prefix: str, message: str) -> int:
    print(f"{prefix}: error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    if argv[:1] == ["predict"]:
        return predict_main(argv[1:])
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)

    from features import FeatureFileError

    from .api import train_and_evaluate
    from .errors import ClassifyError, SettingsError
    from .evaluation.results import side_by_side_table

    report = sys.stdout

    def show(result) -> None:
        print(result.report, file=report, flush=True)  # searches are long: each as soon as it is ready

    try:
        # stdout carries the reports alone: whatever else prints there during the run (Ray's
        # notices of a worker that died and was replaced, say) goes to stderr.
        with stderr_log(), contextlib.redirect_stdout(sys.stderr):
            results = train_and_evaluate(args.features, **keywords_of(args), on_result=show)
    except SettingsError as exc:
        parser.error(str(exc))  # usage and the message; exits with 2
    except (ClassifyError, FeatureFileError) as exc:
        return fail("classify", str(exc))
    except KeyboardInterrupt:
        print("classify: interrupted", file=sys.stderr)
        return 130
    if len(results) > 1:
        print(side_by_side_table(results))
    return 0


def compare_main(argv: list[str]) -> int:
    """``python -m classify compare A.json B.json ...``"""
    parser = argparse.ArgumentParser(
        prog="python -m classify compare",
        description="Print saved --json results side by side: per class, precision, recall and "
                    "F1 of each run (* best of the row), and each later run's F1 minus the first's; "
                    "then each run's 95% bootstrap intervals of accuracy and macro F1 and, for every "
                    "pair, McNemar's exact test and the intervals of the differences.",
    )
    parser.add_argument("results", nargs="+", metavar="RESULT.json", help="files from --json")
    parser.add_argument("--force", action="store_true",
                        help="compare runs scored on different test rows or classes")
    parser.add_argument("--plots", metavar="DIR", help="write precision.png (per-class precision "
                        "side by side) and confusion_<run>.png per run into DIR (created if need be)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the 95%% intervals and the paired tests as JSON")
    parser.add_argument("--html", metavar="FILE",
                        help="write the runs' HTML report (as classify report does)")
    args = parser.parse_args(argv)

    from .errors import ClassifyError, SettingsError
    from .evaluation.comparison import compare
    from .outputs.html import to_html

    try:
        comparison = compare(args.results, force=args.force)
        print(comparison.table)
        if args.plots:
            comparison.write_plots(args.plots)
        if args.json:
            comparison.to_json(args.json)
        if args.html:
            to_html(args.results, args.html)
    except SettingsError as exc:
        parser.error(str(exc))
    except ClassifyError as exc:
        return fail("classify compare", str(exc))
    except KeyboardInterrupt:
        print("classify compare: interrupted", file=sys.stderr)
        return 130
    return 0


def report_main(argv: list[str]) -> int:
    """``python -m classify report RUN.json ... --html FILE``"""
    parser = argparse.ArgumentParser(
        prog="python -m classify report",
        description="Write one self-contained HTML report of saved --json runs on the same test rows: "
                    "the summary with 95% intervals and paired tests, per-class precision / recall / F1 "
                    "side by side, confusion matrices whose cells list their images, the misclassified "
                    "test images, the suspected label errors the runs found, settings and provenance.",
    )
    parser.add_argument("results", nargs="+", metavar="RUN.json", help="files from --json")
    parser.add_argument("--html", metavar="FILE", required=True, help="the HTML file to write")
    args = parser.parse_args(argv)

    from .errors import ClassifyError
    from .outputs.html import to_html

    try:
        print(to_html(args.results, args.html))
    except ClassifyError as exc:
        return fail("classify report", str(exc))
    except KeyboardInterrupt:
        print("classify report: interrupted", file=sys.stderr)
        return 130
    return 0


EXPORT_DESCRIPTION = """\
Write a saved classifier and its backbone as ONE Keras model, from a batch of RGB images at the
backbone's input size (uint8, or float in [0, 255]) to class probabilities: the backbone's
preprocessing (as Keras layers), the backbone with its weights up to the trained layer, its
pooling, then the head as trained, or the logistic regression as a softmax Dense layer (its
row-space projection folded into the weights). Plain keras.models.load_model reads it, without
featurebank; the class names are in the file's featurebank.json member. Random forests and
XGBoost models have no Keras layers and are refused.
"""

EXPORT_EPILOG = """\
examples:
  python -m classify --features f17.hdf5 --model head --save f17.head.keras
  python -m classify export --model f17.head.keras --output f17_classifier.keras
Then, with Keras only:
  model = keras.models.load_model("f17_classifier.keras")
  names = json.loads(zipfile.ZipFile("f17_classifier.keras").read("featurebank.json"))["classes"]
From Python: from classify import export_model.
Exit status: 0 done, 1 failure (message on stderr), 2 usage error, 130 interrupted.
"""


def export_main(argv: list[str]) -> int:
    """``python -m classify export --model M --output OUT.keras``"""
    parser = argparse.ArgumentParser(prog="python -m classify export", description=EXPORT_DESCRIPTION,
                                     epilog=EXPORT_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="SAVED",
                        help="a head or logreg model saved with --save (its card beside it)")
    parser.add_argument("--output", "-o", required=True, metavar="OUT.keras",
                        help="the Keras model file to write")
    parser.add_argument("--weights", metavar="PATH",
                        help="the weights file the training features came from, when it is no longer "
                             "where extraction read it (as for predict)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show TensorFlow's start-up lines (hidden by default, except unexpected ones)")
    args = parser.parse_args(argv)

    from extract.tf_logs import start_keras

    from .errors import ClassifyError, SettingsError
    from .inference.export import export_model

    if args.verbose:
        start_keras(verbose=True)
    try:
        exported = export_model(args.model, args.output, weights=args.weights)
    except SettingsError as exc:
        parser.error(str(exc))
    except ClassifyError as exc:
        return fail("classify export", str(exc))
    except KeyboardInterrupt:
        print("classify export: interrupted; nothing written", file=sys.stderr)
        return 130
    print(exported.line())
    return 0


def predict_parser() -> argparse.ArgumentParser:
    """The options of ``python -m classify predict``."""
    parser = argparse.ArgumentParser(prog="python -m classify predict", description=PREDICT_DESCRIPTION,
                                     epilog=PREDICT_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="M.joblib|M.keras",
                        help="a model saved with --save (its M.card.json must be beside it); "
                             "required unless --imagenet")
    parser.add_argument("--imagenet", action="store_true",
                        help="no model of yours: the backbone with its own top classifies the "
                             "images into the 1,000 ImageNet classes")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--weights", metavar="PATH",
                        help="with --model: the weights file the training features came from, when "
                             "they came from a file that is no longer where extraction read it "
                             "(imagenet and hed-bsds500 are found by name); with --imagenet: "
                             "imagenet (default, Keras' download) or a weights file of the model "
                             "WITH its top")
    parser.add_argument("--backbone", metavar="NAME",
                        help="with --imagenet: the backbone (default: vgg16)")
    parser.add_argument("--top", type=whole, metavar="K",
                        help="with --imagenet: how many classes per image (default: 5)")
    parser.add_argument("--class-index", metavar="FILE",
                        help="with --imagenet: a class index laid out as Keras' "
                             "imagenet_class_index.json (default: the copy shipped with featurebank)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the CSV here (default: stdout)")
    parser.add_argument("--report", action="store_true",
                        help="with --model on a split-folders tree (train/, val/, test/ of class "
                             "folders): after the CSV (which then has a split column), a per-class "
                             "precision / recall / F1 report of each split against its class "
                             "folders (on stdout with --output, else on stderr)")
    parser.add_argument("--batch-size", type=whole, default=32, metavar="N")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show TensorFlow's start-up lines (hidden by default, except unexpected ones)")
    return parser


def predict_main(argv: list[str]) -> int:
    """``python -m classify predict --model M IMAGE_OR_FOLDER ...`` (or ``--imagenet``)"""
    parser = predict_parser()
    args = parser.parse_args(argv)
    if args.imagenet and args.model is not None:
        parser.error("--imagenet uses the backbone's own ImageNet classifier, --model a model of "
                     "yours: give one of them")
    if not args.imagenet:
        if args.model is None:
            parser.error("the following arguments are required: --model (or --imagenet)")
        given = [opt for opt, value in (("--backbone", args.backbone), ("--top", args.top),
                                        ("--class-index", args.class_index)) if value is not None]
        if given:
            parser.error(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --imagenet")
    elif args.report:
        parser.error("--report compares a model of yours with class folders: use it with --model")

    from extract.tf_logs import start_keras

    from .errors import ClassifyError, SettingsError
    from .inference import imagenet
    from .inference import predict as prediction

    if args.verbose:
        start_keras(verbose=True)  # the library's own quiet start is then a no-op

    prefix = "classify predict"
    try:
        if args.imagenet:
            top = 5 if args.top is None else args.top
            predictions = imagenet.iter_imagenet_predictions(
                args.inputs, backbone=args.backbone or "vgg16", weights=args.weights or "imagenet",
                top=top, batch_size=args.batch_size, class_index=args.class_index,
                progress=not args.quiet,
            )

            def write(out):
                imagenet.write_csv(predictions, out, top=top)
        else:
            predictions = prediction.iter_predictions(args.model, args.inputs, weights=args.weights,
                                                      batch_size=args.batch_size, progress=not args.quiet)

            def write(out):
                seen: list = []  # kept for --report only
                rows = (seen.append(p) or p for p in predictions) if args.report else predictions
                prediction.write_csv(rows, out, split=predictions.with_splits)
                if args.report:
                    print(prediction.split_reports(seen) or "no images of a split-folders tree to report on",
                          file=sys.stdout if out is not sys.stdout else sys.stderr)
    except SettingsError as exc:
        parser.error(str(exc))
    except ClassifyError as exc:
        return fail(prefix, str(exc))
    except KeyboardInterrupt:  # while the model and its backbone load
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    try:
        out = open(args.output, "w", newline="") if args.output else sys.stdout
    except OSError as exc:
        return fail(prefix, f"{args.output}: cannot write ({exc.strerror or exc})")
    try:
        write(out)  # row by row, as each batch is done
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
