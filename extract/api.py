"""Stage 1 in one call: :func:`extract_features`, which ``python -m extract`` and notebooks use.

It holds the whole orchestration of a run: the settings (declared and checked once, in
:class:`extract.settings.ExtractSettings`), the dataset listing, the output lock, the
comparison with an existing output (resume, extend, refuse), the plan, the engine, and the
one-line errors. It prints nothing: lines for people go to the ``extract``
logger (the command line shows INFO and up on stderr; a notebook shows warnings), progress
to a ``tqdm.auto`` bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.lock import OutputLock, OutputLockedError
from features.schema import ATTR_DEFAULTS

from .errors import DatasetError, ExtractError, ExtractInterrupted, SettingsError
from .listing import check_split_classes, split_counts
from .pipeline import ExtractSummary
from .ray_engine import DEFAULT_SHARD_SIZE
from .settings import ExtractSettings

if TYPE_CHECKING:
    from features.checksums import Verification

log = logging.getLogger("extract")


def requested_settings(
    backbone: str, weights: str | None, pooling: str, image_size: int | None, interpolation: str,
    dtype: str, precision: str, dataset: str, layer: str | None = None, preprocess: str | None = None,
    run_layers: Sequence[str] | None = None, augment: str | None = None,
) -> dict[str, Any]:
    """The settings that decide feature values, as far as they are known before loading the
    model (None where not known yet: the weights' SHA-256 of a file not there, a saved model's
    input size and default layer). ``run_layers`` are all the layers of the run: one of the
    top makes the run use the weights with the top for every layer. The backbone's part comes
    from its family (:meth:`extract.backbones.BackboneFamily.planned_attrs` and
    :meth:`~extract.backbones.BackboneFamily.weights_identity`)."""
    from .backbones import BackboneRequest, family_for

    family = family_for(backbone, weights)
    planned = family.planned_attrs(BackboneRequest(backbone, weights, pooling, image_size, precision,
                                                   (layer,) if layer else None, preprocess))
    weights_id, weights_sha = family.weights_identity(BackboneRequest(
        backbone, weights, pooling, image_size, precision,
        tuple(run_layers or ([layer] if layer else ())) or None, preprocess))
    return {
        "backbone": planned["backbone"],
        "layer": planned["layer"],
        "pooling": pooling,
        "image_size": planned["image_size"],
        "interpolation": interpolation,
        "preprocessing": planned["preprocessing"],
        "dtype": dtype,
        "precision": precision,
        "dataset": dataset,
        "weights": weights_id,
        "weights_sha256": weights_sha,
        "augment": augment,
    }


def refusal(output: Path, changes: list[str]) -> str:
    """The error for an output made with other settings."""
    return (
        f"{output} holds features made with other settings ({'; '.join(changes)}); "
        "pass --overwrite (overwrite=True) to replace it, or choose another --output"
    )


def extract_features(
    dataset: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    layout: str | None = None,
    manifest: str | os.PathLike | None = None,
    strict: bool = False,
    output: str | os.PathLike | None = None,
    backbone: str = "vgg16",
    weights: str = "imagenet",
    pooling: str | None = None,
    layers: Sequence[str] | None = None,
    preprocess: str | None = None,
    image_size: int | None = None,
    interpolation: str | None = None,
    batch_size: int | None = None,
    buffer_size: int = 1000,
    dtype: str = "float32",
    precision: str | None = None,
    max_pixels: int | None = None,
    augment: str = "none",
    exclude_classes: Sequence[str] | None = None,
    overwrite: bool = False,
    prune: bool = False,
    progress: bool = True,
    verbose: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    shard_size: int | None = DEFAULT_SHARD_SIZE,
    merge: bool = False,
    decoder: str | None = None,
    decode_workers: int | None = None,
) -> ExtractSummary | dict[str, ExtractSummary]:
    """Extract one feature vector per image of a dataset into an HDF5 file.

    The same run as ``python -m extract``, with the same settings, defaults, checks and
    engines (each keyword is a field of :class:`extract.settings.ExtractSettings`, which
    declares its option and checks it): an existing output made with the same settings is
    continued (after a killed run) or extended (new images or classes); one made with other
    settings is refused unless ``overwrite``; nothing is recomputed when nothing changed.

    Parameters
    ----------
    dataset : str or path
        A dataset name in ``data_dir`` (e.g. ``"flowers17"``) or a folder path; for a
        ``layout`` that reads files, a manifest file's name in ``data_dir`` or path. With
        ``class-per-folder`` each immediate sub-folder is a class; class folders without
        images are left out (and logged).
    data_dir : path, optional
        Folder holding datasets by name (default: ``$FEATUREBANK_DATA`` or ``./datasets``).
    layout : str, optional
        How the dataset is laid out: a name registered with :func:`extract.register_layout`
        (``python -m extract --help`` lists them). By default the first layout that
        recognises the dataset (``"split-folders"`` for a folder of ``train/``, ``val/``,
        ``test/`` folders: every row then records its split), else ``"class-per-folder"``.
    manifest : path, optional
        A CSV file of ``path,label[,split]`` rows to read instead of ``dataset`` (the
        ``manifest`` layout): paths relative to the file, or absolute.
    strict : bool
        Refuse a dataset whose layout found bad entries (a manifest's missing files, empty
        labels, unknown splits, duplicate paths); by default they are skipped, and recorded
        with their line in the file's ``skipped`` as undecodable images are.
    output : path, optional
        The HDF5 file (default: ``<dataset folder name>.hdf5`` in the current directory).
    backbone, weights, pooling, image_size, interpolation, precision
        The model and how images reach it: see ``python -m extract --help``. ``precision``
        defaults to the file's own when one is continued or extended, else to what suits the
        device (bf16 on a GPU that has it, float32 otherwise); bf16 asked for where it is not
        native logs a warning. ``backbone`` is a registry name (``python -m extract
        --list-backbones``), a saved model's ``PATH.keras``, or what a family registered with
        :func:`extract.register_backbone_family` claims; ``weights`` is ``"imagenet"``,
        ``"hed-bsds500"`` (VGG16 only), a weights file's path, or None (random).
    layers : list of str, optional
        Layers to take features from, by name (default: the backbone's last convolutional
        map). Layers of the top (``fc2``, ``predictions``) build the model with its top at
        its native size. Several layers run in one pass and write one file each,
        ``<output stem>.<layer>.hdf5``.
    preprocess : str, optional
        For a saved model: the ``keras.applications`` module whose ``preprocess_input`` it
        expects, or ``"none"``.
    batch_size, buffer_size, dtype, max_pixels
        Images per backbone call (default: 32 on a CPU, 128 on a GPU), rows per commit,
        storage type, and the pixel limit past which an image is skipped (default: Pillow's
        decompression-bomb limit).
    augment : {"none", "flip"}
        ``"flip"`` also stores each image's features mirrored left to right
        (``mirror_features``, row for row), in the same pass: for ``classify``'s ``augment``
        and ``tta``. A file is extended only with the same ``augment``.
    exclude_classes : list of str, optional
        Class folders to leave out, recorded in the file. ``None`` applies the dataset
        registry's default (Caltech-101 leaves out ``BACKGROUND_Google``); ``[]`` keeps all.
    overwrite, prune
        Replace the output whatever it holds; drop rows of images no longer in the dataset.
    progress, verbose
        Show a progress bar (``tqdm.auto``: a widget in Jupyter); show TensorFlow's start-up
        lines.
    engine, ray_address, workers, cpus_per_worker, shard_size, merge
        ``"ray"`` runs on a Ray cluster (see the README's "On a Ray cluster"); a
        ``shard_size`` of None is the default (``extract.ray_engine.DEFAULT_SHARD_SIZE``).
    decoder, decode_workers
        The local engine's image decoders: ``"processes"`` (default on Linux) or
        ``"threads"``, and how many (default: one per core). Both give the same pixels.

    Returns
    -------
    ExtractSummary, or dict of layer name to ExtractSummary for several layers
        ``.output``, ``.written`` (rows added), ``.skipped`` (``(path, reason)`` pairs),
        ``.rows`` (rows in the file), ``.up_to_date``, ``.line()`` (the command's summary).

    Raises
    ------
    SettingsError
        A setting that makes no sense, alone or with others, before anything is read (a
        ``ValueError``; the command line exits with 2).
    ExtractError
        Anything else that stops the run, with the one line the command line prints.
    ExtractInterrupted
        A ``KeyboardInterrupt``: the rows committed so far stay; call again to continue.

    Examples
    --------
    >>> from extract import extract_features
    >>> summary = extract_features("flowers17", data_dir="../shared/datasets",
    ...                            backbone="mobilenetv2", pooling="avg",
    ...                            weights="mobilenetv2_1.0_224_imagenet_notop.weights.h5",
    ...                            output="f17.hdf5")
    >>> summary.written, len(summary.skipped)
    (1360, 0)
    >>> extract_features("flowers17", data_dir="../shared/datasets", backbone="mobilenetv2",
    ...                  pooling="avg", weights="mobilenetv2_1.0_224_imagenet_notop.weights.h5",
    ...                  output="f17.hdf5").up_to_date
    True
    """
    # The first statement, so locals() holds the parameters only: ExtractSettings declares and
    # checks them (the one place, shared with python -m extract).
    keywords = dict(locals())
    del keywords["dataset"]
    settings = ExtractSettings(**keywords)
    if (dataset is None) == (manifest is None):
        raise SettingsError("give a dataset (--dataset) or a manifest (--manifest), one of the two")
    from PIL import Image

    max_pixels = settings.max_pixels
    pillow_limit = Image.MAX_IMAGE_PIXELS
    # Pillow's limit is process-wide state: changed for this call only, and put back after.
    with warnings.catch_warnings():
        # Images over the limit are skipped with a reason, so Pillow's warning says nothing new.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if max_pixels and pillow_limit and max_pixels > pillow_limit:
            # Pillow refuses outright at twice its own limit; let a higher max_pixels decide.
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return _run(os.fspath(dataset if manifest is None else manifest), settings)
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit


def _run_parts(s: ExtractSettings) -> tuple[dict, dict, dict]:
    """A run's settings as the engines take them: the model, the per-image options, Ray's."""
    model = dict(backbone=s.backbone, weights=s.weights, pooling=s.pooling, image_size=s.image_size,
                 precision=s.precision, layers=list(s.layers) if s.layers else None, preprocess=s.preprocess)
    options = dict(prune=s.prune, batch_size=s.batch_size, dtype=s.dtype, interpolation=s.interpolation,
                   max_pixels=s.max_pixels, progress=s.progress, augment=s.augment, decoder=s.decoder,
                   decode_workers=s.decode_workers)
    ray = dict(address=s.ray_address, workers=s.workers, cpus_per_worker=s.cpus_per_worker,
               shard_size=s.shard_size, merge=s.merge)
    return model, options, ray


def layer_outputs(output: Path, layers: Sequence[str] | None) -> list[Path]:
    """One output per layer: ``output`` itself for one layer, else ``<stem>.<layer><suffix>``."""
    if not layers or len(layers) == 1:
        return [output]
    return [output.with_name(f"{output.stem}.{layer}{output.suffix}") for layer in layers]


def _run(dataset: str, settings: ExtractSettings) -> ExtractSummary | dict[str, ExtractSummary]:
    """:func:`extract_features` once its settings are checked."""
    from .ray_engine import ray_available
    from .sources import dataset_name, registry_exclusions

    model, options, ray = _run_parts(settings)
    layout_impl, root = _layout_and_source(dataset, settings)
    exclude_classes, output, overwrite = settings.exclude_classes, settings.output, settings.overwrite
    if exclude_classes is None:
        # The registry's exclusions are of class folders of the datasets it names.
        exclude_classes = registry_exclusions(root) if layout_impl.reads == "folder" else []
        if exclude_classes:
            log.info(f"leaving out {', '.join(exclude_classes)}: not a class of {root.name} in the "
                     "registry (--exclude-class with no name keeps it)")
    listing = layout_impl.list_images(root, exclude=list(exclude_classes))
    if listing.empty_classes:
        log.warning(f"warning: classes without images, left out: {', '.join(listing.empty_classes)}")
    _report_rejected(root, listing.rejected, settings.strict)
    check_split_classes(root, listing, log)
    name = dataset_name(root)
    output = Path(output) if output is not None else Path(f"{name}.hdf5")
    if not output.parent.is_dir():
        raise ExtractError(f"{output}: its folder {output.parent} does not exist")
    splits = f" ({', '.join(f'{n} {split}' for split, n in split_counts(listing.splits).items())})" \
        if listing.splits is not None else ""
    log.info(f"{len(listing)} images{splits} in {len(listing.class_names)} classes from {root} "
             f"({layout_impl.name})")
    ray_engine = settings.engine == "ray"
    if ray_engine and not ray_available():
        raise ExtractError('engine "ray" needs Ray Data: pip install -e ".[ray]"')
    layers = model["layers"]
    outputs = layer_outputs(output, layers)

    with contextlib.ExitStack() as locks:
        for path in outputs:
            locks.callback(locked(path).release)
        try:
            summaries = _run_locked(listing, name, outputs, overwrite, ray_engine, model, options, ray,
                                    settings.buffer_size, settings.verbose)
        except KeyboardInterrupt:
            raise ExtractInterrupted(
                f"interrupted; rows committed so far stay in {', '.join(map(str, outputs))}, run the "
                "same command again to continue"
            ) from None
        except OSError as exc:
            raise ExtractError(
                f"{', '.join(map(str, outputs))}: cannot write ({exc}); the rows committed so far are "
                "kept, run the same command again to continue once the cause is fixed"
            ) from None
    if not layers or len(layers) == 1:
        return summaries[0]
    return dict(zip(layers, summaries, strict=True))


def _layout_and_source(dataset: str, settings: ExtractSettings):
    """The layout that reads ``dataset`` and the folder or file it names: ``--manifest``'s
    layout, the one named, else the first that recognises it (:func:`detect_layout`)."""
    from .layouts import detect_layout, layout_named
    from .sources import resolve_dataset

    if settings.manifest is not None:
        layout = layout_named("manifest")
    elif settings.layout is not None:
        layout = layout_named(settings.layout)
    else:
        source = resolve_dataset(dataset, settings.data_dir, reads=None)
        return detect_layout(source), source
    return layout, resolve_dataset(dataset, settings.data_dir, reads=layout.reads)


def _report_rejected(source: Path, rejected: Sequence[tuple[str, str]], strict: bool) -> None:
    """Entries the layout could not use: refused with ``strict``, else logged (each is then
    recorded in the file's ``skipped``, with its reason)."""
    if not rejected:
        return
    first = f"{rejected[0][1]} ({rejected[0][0]})"
    more = f" and {len(rejected) - 1} more" if len(rejected) > 1 else ""
    if strict:
        raise DatasetError(f"{source}: {first}{more}; fix them, or leave out --strict to skip and "
                           "record them")
    log.warning(f"warning: {source}: {len(rejected)} entries skipped (recorded in the file), e.g. {first}")


def _run_locked(listing, name, outputs, overwrite, ray_engine, model, options, ray, buffer_size, verbose):
    """The part of a run that holds the outputs' locks: plan each output, then extract."""
    from features import FeatureFile, FeatureFileError
    from features.writer import remove_stale

    from .backbones import family_for
    from .pipeline import finish_existing
    from .plan import plan_work, settings_changes, split_refusal
    from .ray_engine import adopt_unpublished

    layers = model["layers"] or [None]
    plans, existing, dropped = [], [], []
    for path, layer in zip(outputs, layers, strict=True):
        remove_stale(path, keep_shards=ray_engine and not overwrite, replace=overwrite)
        found = None
        if path.exists() and not overwrite:
            _repair(path)  # first: shards can only join an index that reads
            if ray_engine and (adopted := adopt_unpublished(path, listing)):
                log.info(f"committed {adopted} shards that a killed run had finished")
            try:
                found = FeatureFile(path, allow_partial=True)
            except FeatureFileError as exc:
                raise ExtractError(f"{exc}; pass --overwrite to replace it") from None
            found.close()
            requested = requested_settings(
                **model_settings(model), layer=layer, interpolation=options["interpolation"],
                dtype=options["dtype"], dataset=name, run_layers=model["layers"],
                augment=options["augment"],
            )
            if changes := settings_changes(found.attrs, requested):
                raise ExtractError(refusal(path, changes))
            if message := split_refusal(path, listing, found):
                raise ExtractError(message)
        plan, moved_out = plan_work(listing, found), 0
        if plan.moved:
            found, plan, moved_out = _re_split(path, listing, found, plan, options["prune"], ray_engine)
        if plan.gone:
            action = "removing them" if options["prune"] else "kept; --prune removes them"
            log.info(f"{len(plan.gone)} images in {path} are no longer in the dataset ({action}), "
                     f"e.g. {plan.gone[0]}")
        if plan.resume and plan.done and not plan.up_to_date(options["prune"]):
            state = "finished" if plan.complete else "unfinished"
            log.info(f"continuing the {state} {path}: {plan.done} images done, {len(plan.todo)} to go"
                     + (f", new classes {', '.join(plan.new_classes)}" if plan.new_classes else ""))
        plans.append(plan)
        existing.append(found)
        dropped.append(moved_out)

    summaries: list[ExtractSummary | None] = [None] * len(outputs)
    work = []
    for k, (path, plan) in enumerate(zip(outputs, plans, strict=True)):
        if plan.up_to_date(options["prune"]):
            summaries[k] = ExtractSummary(output=path, written=0, skipped=[], ignored=len(listing.ignored),
                                          seconds=0.0, rows=plan.done, up_to_date=True)
        elif not len(plan.todo):
            summaries[k] = finish_existing(path, plan, prune=options["prune"],
                                           merge=ray["merge"] or not ray_engine)
        else:
            work.append(k)
    if work:
        run_options = dict(options, dataset=name)
        # Only the layers whose files need work; with the top if any layer of the run needs it.
        family = family_for(model["backbone"], model["weights"])
        top = family.needs_top(_request(model, [layer for layer in layers if layer]))
        chosen = dict(model, layers=[layers[k] for k in work] if model["layers"] else None, top=top)
        targets = [(outputs[k], plans[k]) for k in work]
        found = [existing[k] for k in work]
        if ray_engine:
            done = [_extract_on_ray(listing, *targets[0], found[0], chosen, run_options, ray)]
        else:
            done = _extract_here(listing, targets, found, chosen, run_options, buffer_size, verbose)
        for k, summary in zip(work, done, strict=True):
            summaries[k] = summary
    # The rows of moved images dropped before the run count among those it removed.
    return [dataclasses.replace(summary, pruned=summary.pruned + n) if n else summary
            for summary, n in zip(summaries, dropped, strict=True)]


def _repair(path: Path) -> None:
    """Drop the damaged rows of ``path`` (an output about to be continued or extended), so that
    the run extracts their images again; refuse a file whose metadata is damaged."""
    from features import FeatureFileError
    from features.checksums import H5_ERRORS, format_ranges, one_line
    from features.writer import repair

    try:
        found = repair(path)
    except FeatureFileError as exc:
        fix = "" if "--overwrite" in str(exc) else "; pass --overwrite to replace it"
        raise ExtractError(f"{exc}{fix}") from None
    except H5_ERRORS as exc:  # a source the check could read but the rewrite cannot
        raise ExtractError(f"{path}: cannot be repaired ({one_line(exc)}); python -m extract --verify {path} "
                           "names the damage, or pass --overwrite to extract it again") from None
    if found.damaged:
        log.warning(f"warning: {path}: damaged rows {format_ranges(found.damaged)} dropped, extracting "
                    "their images again (the intact rows are kept)")


def verify_features(path: str | os.PathLike, add_checksums: bool = False) -> Verification:
    """Check every committed row of the feature file ``path`` (``python -m extract --verify``).

    Parameters
    ----------
    path : path
        The feature file.
    add_checksums : bool
        Rewrite a file written without checksums (and without damage found) with them,
        atomically, under the file's lock.

    Returns
    -------
    features.checksums.Verification
        ``.damaged`` (row ranges, counted from 0), ``.rows``, ``.checksummed``, ``.line()``.

    Raises
    ------
    ExtractError
        The file cannot be read (not a feature file, damaged metadata) or is being written.

    Examples
    --------
    >>> from extract import verify_features
    >>> verify_features("f17.hdf5").line()  # doctest: +SKIP
    'f17.hdf5: 1360 rows verified, no damage'
    """
    from features import FeatureFileError
    from features.checksums import verify_file
    from features.writer import rewrite_file

    if not Path(path).is_file():
        raise ExtractError(f"{path}: no such file; give the path of a feature file")
    # Only a rewrite needs the lock: a check alone works on read-only drives too.
    lock = locked(path) if add_checksums else None
    try:
        found = verify_file(path)
        if add_checksums and not found.checksummed and not found.damaged:
            rewrite_file(path)
            found = verify_file(path)
    except FeatureFileError as exc:
        raise ExtractError(str(exc)) from None
    except OSError as exc:
        raise ExtractError(f"{path}: cannot write ({exc}); the file is unchanged") from None
    finally:
        if lock is not None:
            lock.release()
    return found


def locked(path: str | os.PathLike) -> OutputLock:
    """``path``'s output lock, acquired; one line if another run holds it or it cannot be made."""
    lock = OutputLock(path)
    try:
        lock.acquire()
    except OutputLockedError as exc:
        raise ExtractError(str(exc)) from None
    except OSError as exc:
        raise ExtractError(f"{path}: cannot create its lock file ({exc})") from None
    return lock


def _re_split(path: Path, listing, found, plan, prune: bool, ray_engine: bool):
    """The file, the plan and how many rows were dropped once the rows of images moved to
    another split are dropped (with ``prune``; refused without). A moved image under another
    path (``val/x.jpg`` now ``train/x.jpg``) goes with the gone ones; one under the same path
    (a manifest's split column changed) is dropped first, so that the run extracts it again
    (a run killed after that extracts it as a new image)."""
    from features import FeatureFile, FeatureFileError

    from .pipeline import finish_existing
    from .plan import moved_refusal, plan_work

    if not prune:
        raise ExtractError(moved_refusal(str(path), plan.moved))
    log.info(f"{len(plan.moved)} images moved to another split: extracting them again, e.g. "
             f"{plan.moved[0][2]} ({plan.moved[0][1]} -> {plan.moved[0][3]})")
    same = [old for old, _, new, _ in plan.moved if old == new]
    if not same:
        return found, plan, 0
    summary = finish_existing(path, dataclasses.replace(plan, gone=same), prune=True, merge=not ray_engine)
    try:
        found = FeatureFile(path, allow_partial=True)
    except FeatureFileError as exc:
        raise ExtractError(str(exc)) from None
    found.close()
    return found, plan_work(listing, found), summary.pruned


def _request(model: dict, layers: Sequence[str] | None = None):
    """The :class:`extract.backbones.BackboneRequest` of a run's model settings."""
    from .backbones import BackboneRequest

    return BackboneRequest(model["backbone"], model["weights"], model["pooling"], model["image_size"],
                           model["precision"], tuple(layers) if layers else None, model["preprocess"])


def model_settings(model: dict) -> dict:
    """The backbone settings :func:`requested_settings` compares."""
    return {k: model[k] for k in ("backbone", "weights", "pooling", "image_size", "precision", "preprocess")}


def _describe(model: dict, facts: dict, where: str = "") -> None:
    log.info(f"{model['backbone']} ({facts['weights']}, {facts['layer']}, {model['pooling']}, "
             f"{model['precision']}) -> {facts['dim']} features per image{where}")


def _same_weights(existing, output: Path, facts: dict) -> str | None:
    """The refusal when a file being extended was made with other weights or another layer."""
    from .plan import settings_changes

    if existing is None:
        return None
    changes = settings_changes(
        existing.attrs, {"layer": facts["layer"], "weights_sha256": facts["weights_sha256"]}
    )
    return refusal(output, changes) if changes else None


def _extract_here(listing, targets, existing, model, options, buffer_size, verbose):
    """The local engine's part of a run: load the backbone, check it against the files, extract
    every layer in one pass."""
    from .backbones import load_backbone
    from .devices import device_defaults, warn_if_bf16_is_slow
    from .pipeline import backbone_facts, extract_layers
    from .tf_logs import start_keras

    start_keras(verbose)
    batch_size, precision = device_defaults()
    model = dict(model, precision=model["precision"] or _recorded_precision(existing, precision))
    options = dict(options, batch_size=options["batch_size"] or batch_size)
    warn_if_bf16_is_slow(model["precision"], log)
    loaded = load_backbone(model["backbone"], model["weights"], model["pooling"], model["image_size"],
                           model["precision"], layers=model["layers"], preprocess=model["preprocess"],
                           top=model["top"])
    for k, ((output, _), found) in enumerate(zip(targets, existing, strict=True)):
        facts = backbone_facts(loaded, k)
        _describe(model, facts)
        if message := _same_weights(found, output, facts):
            raise ExtractError(message)
    return extract_layers(listing, loaded, targets, buffer_size=buffer_size, **options)


def _recorded_precision(existing, default: str) -> str:
    """The precision of a run given none: that of the files it continues, else ``default``."""
    recorded = {str(found.attrs.get("precision", ATTR_DEFAULTS["precision"]))
                for found in existing if found is not None}
    if len(recorded) > 1:
        raise ExtractError(f"the files of this run were computed in {' and '.join(sorted(recorded))}: "
                           "pass --precision, with --overwrite for the files made otherwise")
    return recorded.pop() if recorded else default


def _extract_on_ray(listing, output, plan, existing, model, options, ray_settings):
    """The Ray engine's part of a run: join or start Ray, extract, stop what it started."""
    import ray

    from .devices import CPU_BATCH_SIZE
    from .ray_engine import RayOptions, connect, ray_extract

    ray_options = RayOptions(**ray_settings)
    # The driver need not have the actors' devices: a new file is float32 unless asked. Ray
    # Data's own tasks decode, so the local decoder's settings do not apply.
    model = dict(model, precision=model["precision"] or _recorded_precision([existing], "float32"))
    options = {k: v for k, v in options.items() if k not in ("decoder", "decode_workers")}
    options["batch_size"] = options["batch_size"] or CPU_BATCH_SIZE

    def check(facts: dict) -> str | None:
        _describe(model, facts, ", on Ray")
        return _same_weights(existing, output, facts)

    started = connect(ray_options)
    try:
        spec = {k: v for k, v in model.items() if k not in ("backbone", "top")}
        spec["name"] = model["backbone"]
        return ray_extract(listing, spec, output, plan=plan, options=ray_options, on_facts=check,
                           **options)
    finally:
        if started:
            ray.shutdown()
