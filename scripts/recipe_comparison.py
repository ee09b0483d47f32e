"""The recipe's comparison on Flowers-17, in one run: feature extraction + logistic regression,
a new dense head on the frozen base, and fine-tuning the top of the backbone, each without and
with mirrored images (``--augment --tta``), on the same 340 test images.

Extracts what it needs into ``--out`` (skipped when the files are there: extraction resumes
and says it is up to date), runs every model through :func:`classify.train_and_evaluate`
writing ``<out>/<backbone>.<run>.json``, then prints a summary (test accuracy, macro F1,
search and final-fit seconds) and ``classify compare``'s per-class table of all the runs.

    python scripts/recipe_comparison.py --backbone mobilenetv2 --out /tmp/recipe
    python scripts/recipe_comparison.py --backbone vgg16-hed --out /tmp/recipe

The same runs from the command line, e.g. for MobileNetV2's fine-tuning with mirrors:

    python -m extract --dataset flowers17 --backbone mobilenetv2 --weights W \\
        --layer block_15_add --augment flip -o f17_block15.hdf5
    python -m classify -f f17_block15.hdf5 --model finetune --augment --tta --json ft.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("FEATUREBANK_SHARED", REPO.parent / "shared"))
MNV2 = str(SHARED / "models" / "mobilenetv2_1.0_224_imagenet_notop.weights.h5")

#: Per backbone: the extractions (file stem -> extract_features settings) and the runs
#: (name -> file stem, model, grid or None for the registry's).
SETUPS = {
    "mobilenetv2": {
        "extract": {
            "avg": dict(backbone="mobilenetv2", weights=MNV2, pooling="avg"),
            "block15": dict(backbone="mobilenetv2", weights=MNV2, pooling="flatten",
                            layers=["block_15_add"]),
        },
        "runs": {
            "logreg": ("avg", "logreg", None),
            "head": ("avg", "head", None),
            "finetune": ("block15", "finetune", None),
        },
    },
    "vgg16-hed": {
        "extract": {
            # Both layers in one pass over the images: <stem>.<layer>.hdf5 each.
            "maps": dict(backbone="vgg16", weights="hed-bsds500", pooling="flatten",
                         layers=["block4_pool", "block5_pool"]),
        },
        "runs": {
            "logreg": ("maps.block5_pool", "logreg", None),
            "head": ("maps.block5_pool", "head", None),
            # block5 trains at ~0.016 s per image and epoch on 2 CPU cores (bench_finetune.py):
            # the recipe's 25 + 100 epochs over 3 folds and 2 learning rates would take hours
            # here, so this runs one learning rate, 2 folds and shorter phases.
            "finetune": ("maps.block4_pool", "finetune",
                         {"learning_rate": [1e-3], "warmup_epochs": [10], "epochs": [30],
                          "patience": [5]}),
        },
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", choices=SETUPS, required=True)
    parser.add_argument("--out", required=True, help="folder for the feature files and JSON results")
    parser.add_argument("--data-dir", default=str(SHARED / "datasets"))
    parser.add_argument("--dataset", default="flowers17")
    parser.add_argument("--only", nargs="+", metavar="RUN",
                        help="runs to do (e.g. finetune finetune+mirrors); default: all")
    parser.add_argument("--html", metavar="FILE",
                        help="also write the HTML report of all the runs (the logistic regressions "
                             "with their suspected label errors)")
    args = parser.parse_args()

    from classify import compare, to_html, train_and_evaluate
    from extract import extract_features

    setup, out = SETUPS[args.backbone], Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{platform.machine()}, {os.cpu_count()} cores; {args.dataset}, {args.backbone}", flush=True)
    files = {}
    for stem, settings in setup["extract"].items():
        done = extract_features(args.dataset, data_dir=args.data_dir,
                                output=out / f"{args.dataset}_{args.backbone}_{stem}.hdf5",
                                augment="flip", progress=False, **settings)
        for layer, summary in (done.items() if isinstance(done, dict) else [(None, done)]):
            files[f"{stem}.{layer}" if layer else stem] = summary.output
            print(f"extract {stem} {layer or ''}: {summary.line()}", flush=True)

    written = []
    for name, (stem, model, grid) in setup["runs"].items():
        for mirrors in (False, True):
            run = f"{name}+mirrors" if mirrors else name
            path = out / f"{args.backbone}.{run}.json"
            if args.only and run not in args.only:
                if path.exists():
                    written.append(path)
                continue
            started = time.perf_counter()
            # Label issues cost a fit per fold: found for the quick logistic regressions only.
            issues = out / f"{args.backbone}.{run}.issues.csv" if args.html and model == "logreg" else None
            result = train_and_evaluate(files[stem], [model], grid=grid, augment=mirrors,
                                        tta=mirrors, json=path, folds=2 if grid else 3,
                                        label_issues=issues)[model]
            print(f"{run}: accuracy {result.accuracy:.4f}, {time.perf_counter() - started:.0f} s "
                  f"in all; {result.best_params}", flush=True)
            written.append(path)

    print(f"\n{'run':18} {'accuracy':>9} {'macro F1':>9} {'search s':>9} {'final fit s':>12}")
    for path in written:
        doc = json.loads(path.read_text())
        print(f"{path.stem.split('.', 1)[1]:18} {doc['accuracy']:9.4f} "
              f"{doc['report']['macro avg']['f1-score']:9.4f} {doc['search_seconds']:9.1f} "
              f"{doc['refit_seconds']:12.1f}")
    if len(written) > 1:
        print()
        print(compare(written))
    if args.html:
        print(f"\nHTML report: {to_html(written, args.html)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
