"""Stage 1's settings, declared once: :class:`ExtractSettings`, and their checks.

Each field of :class:`ExtractSettings` is a keyword of :func:`extract.extract_features` with
its default, and carries in its metadata the command line's flag, help and text-to-value
conversion (:func:`extract.options.option`): :func:`add_arguments` builds ``python -m
extract``'s options from it, :func:`keywords_of` maps parsed arguments back to keywords, and
:func:`option_table` renders the docs' table. Making one checks it, so a notebook and
``python -m extract`` refuse the same settings with the same one-line
:class:`~extract.errors.SettingsError`.
"""

from __future__ import annotations

import argparse
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from features.schema import AUGMENTS, FEATURE_DTYPES

from .backbones import (
    PRECISIONS,
    PREPROCESS_MODULES,
    all_poolings,
    check_backbone_settings,
    default_interpolation,
    default_pooling,
)
from .decoding import DECODERS, default_decoder
from .errors import SettingsError
from .images import DEFAULT_MAX_PIXELS, INTERPOLATIONS
from .layouts import DEFAULT_LAYOUT, LAYOUTS, layout_named
from .options import add_arguments_from, keywords_from, named, number, option, option_table_of, whole
from .ray_engine import DEFAULT_SHARD_SIZE
from .sources import DATA_ENV

__all__ = ["ENGINES", "RAY_GROUP", "ExtractSettings", "add_arguments", "keywords_of", "option_table"]

#: ``engine=`` choices: this process, or a Ray cluster.
ENGINES = ("local", "ray")

#: The ``--help`` group of the Ray engine's options, and what it says.
RAY_GROUP = "Ray engine"
RAY_DESCRIPTION = ("run on a Ray cluster (pip install -e .[ray]); every node must see the dataset and "
                   "the output folder under the same paths")

#: The settings that are whole numbers of at least 1 where given (None: the default).
COUNTS = ("batch_size", "buffer_size", "shard_size", "max_pixels", "workers", "image_size", "decode_workers")


def _layout_help() -> str:
    """``--layout``'s help, naming the layouts registered when the parser is made."""
    return ("how the dataset is laid out: "
            + "; ".join(f"{name} (a {layout.reads}): {layout.description}"
                        for name, layout in LAYOUTS.items())
            + f" (default: {' or '.join(_recognising())} where it recognises the dataset, else "
            f"{DEFAULT_LAYOUT})")


def _recognising() -> list[str]:
    """The registered layouts that recognise a dataset by themselves."""
    return [name for name, layout in LAYOUTS.items() if hasattr(layout, "recognises")]


def _ray(help: str, *flags: str, **kwargs: Any) -> dict[str, Any]:
    """An option of the Ray engine's group."""
    return option(help, *flags, group=RAY_GROUP, **kwargs)


@dataclass(frozen=True)
class ExtractSettings:
    """The settings of one stage-1 run: every keyword of :func:`extract.extract_features`
    after the dataset, with its default; made, they are checked.

    ``backbone`` and ``weights`` given as paths become text, ``layers`` (one name or several)
    a tuple, and ``shard_size=None`` the default shard size.

    Examples
    --------
    >>> ExtractSettings(layers="fc2", backbone="vgg16").layers
    ('fc2',)
    >>> ExtractSettings(batch_size=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    extract.errors.SettingsError: batch_size (--batch-size) must be a whole number of at least 1, got 0
    """

    layout: str | None = field(default=None, metadata=option(_layout_help, choices=lambda: list(LAYOUTS)))
    manifest: str | os.PathLike | None = field(default=None, metadata=option(
        "a CSV file of path,label[,split] rows (paths relative to the file, or absolute) to read "
        "instead of --dataset: the manifest layout", metavar="FILE.csv"))
    strict: bool = field(default=False, metadata=option(
        "refuse a manifest with bad rows (missing file, empty label, unknown split, duplicate path) "
        "instead of skipping them and recording each, with its line, in the file", action="store_true"))
    data_dir: str | os.PathLike | None = field(default=None, metadata=option(
        f"folder holding datasets by name (default: ${DATA_ENV} or ./datasets)", metavar="DIR"))
    output: str | os.PathLike | None = field(default=None, metadata=option(
        "output HDF5 file (default: <dataset>.hdf5 in the current directory)", "--output", "-o",
        metavar="FILE"))
    backbone: str = field(default="vgg16", metadata=option(
        "one of the 40 keras.applications models (--list-backbones; default: vgg16), a keras_hub "
        "preset as keras_hub:PRESET (a name, handle or local preset directory; docs/keras-hub.md), a "
        "saved Keras model file with --preprocess, or a name that a registered backbone family claims",
        metavar="NAME|PATH.keras"))
    layers: tuple[str, ...] | None = field(default=None, metadata=option(
        "take features from these layers, by name (default: the last convolutional map, e.g. VGG16's "
        "block5_pool). Layers of the top (fc1, fc2, predictions) build the model with its top at its "
        "native size and need weights with the top. Several layers run in one pass and write "
        "<output stem>.<layer>.hdf5 each", "--layer", nargs="+", metavar="NAME"))
    preprocess: str | None = field(default=None, metadata=option(
        "with --backbone PATH.keras: the keras.applications module whose preprocess_input the model "
        f"expects ({', '.join(PREPROCESS_MODULES)})", choices=PREPROCESS_MODULES, metavar="MODULE|none"))
    weights: str | None = field(default="imagenet", metadata=option(
        "weights to load (default: imagenet; see below)", metavar="imagenet|hed-bsds500|PATH"))
    pooling: str | None = field(default=None, metadata=option(
        "how the last conv map becomes a vector: flatten (7x7x512 = 25088 for VGG16, the published "
        "recipe), or global avg / max; a layer of tokens (transformers) also takes cls, its first "
        "token, mean, the mean of its patch tokens, and cls+mean, both (default: the backbone's: "
        "flatten for the keras.applications CNNs and saved models; for a keras_hub preset cls, or "
        "mean where it has no class token, as SigLIP)",
        choices=all_poolings))
    image_size: int | None = field(default=None, metadata=option(
        "resize images to N x N (default: the backbone's, 224)", metavar="N", text=whole))
    interpolation: str | None = field(default=None, metadata=option(
        "resize filter, as keras.utils.load_img names it (default: the backbone's: nearest, Keras' "
        "default, for the keras.applications CNNs; a keras_hub preset's image converter's, bilinear)",
        choices=sorted(INTERPOLATIONS)))
    batch_size: int | None = field(default=None, metadata=option(
        "images per backbone call (default: 32 on a CPU, 128 on a GPU)", metavar="N", text=whole))
    buffer_size: int = field(default=1000, metadata=option(
        "rows kept in memory between writes to the file (default: 1000)", metavar="N", text=whole))
    decoder: str | None = field(default=None, metadata=option(
        "how the local engine decodes images: processes (default on Linux; each decodes its share of "
        "a batch into shared memory) or threads (one process, Python's lock limits it); both give the "
        "same pixels", choices=DECODERS))
    decode_workers: int | None = field(default=None, metadata=option(
        "decoding processes or threads (default: one per core)", metavar="N", text=whole))
    dtype: str = field(default="float32", metadata=option(
        "storage type of the features; float16 halves the file (default: float32)", choices=FEATURE_DTYPES))
    precision: str | None = field(default=None, metadata=option(
        "compute precision of the backbone: bf16 (bfloat16; CPUs with AVX512-BF16 or AMX, recent "
        "GPUs) or fp16 (float16 mixed precision, GPUs); features are still stored as --dtype "
        "(default: the file's own when continuing one, else bf16 on a GPU that has it and float32 "
        "otherwise)", choices=list(PRECISIONS)))
    augment: str = field(default="none", metadata=option(
        "flip: also store the features of each image mirrored left to right (mirror_features, same "
        "rows; the backbone runs twice per batch), for classify --augment and --tta (default: none)",
        choices=AUGMENTS))
    max_pixels: int | None = field(default=None, metadata=option(
        "skip images with more than N pixels, read from the header before decoding (default: "
        f"Pillow's decompression-bomb limit, {DEFAULT_MAX_PIXELS})", metavar="N", text=whole))
    overwrite: bool = field(default=False, metadata=option(
        "replace an existing output instead of resuming or extending it, even one made with other "
        "settings", action="store_true"))
    prune: bool = field(default=False, metadata=option(
        "remove rows of images that are no longer in the dataset (they are only reported without it)",
        action="store_true"))
    exclude_classes: Sequence[str] | None = field(default=None, metadata=option(
        "class folders to leave out, recorded in the file (default: the dataset registry's, e.g. "
        "Caltech-101's BACKGROUND_Google; with no NAME, none)", "--exclude-class", nargs="*",
        metavar="NAME"))
    progress: bool = field(default=True, metadata=option(
        "no progress bar", "--quiet", "-q", action="store_false"))
    verbose: bool = field(default=False, metadata=option(
        "show TensorFlow's start-up lines (hidden by default, except unexpected ones)", "--verbose", "-v",
        action="store_true"))
    engine: str = field(default="local", metadata=_ray(
        "local: this process (default); ray: Ray Data decodes, an actor pool runs the backbone, each "
        "actor writes its own shards", choices=ENGINES))
    ray_address: str | None = field(default=None, metadata=_ray(
        "cluster to join (default: $RAY_ADDRESS, else a local Ray instance is started for the run)",
        metavar="ADDR"))
    workers: int | None = field(default=None, metadata=_ray(
        "backbone actors (default: one per GPU when the cluster has GPUs, else 1)", metavar="N", text=whole))
    cpus_per_worker: float = field(default=1.0, metadata=_ray(
        "CPUs each CPU actor reserves and the backbone threads it runs (default: 1)", metavar="N",
        text=number))
    shard_size: int | None = field(default=DEFAULT_SHARD_SIZE, metadata=_ray(
        "images per shard, the unit of work of an actor and of loss when a run is killed, rounded up "
        f"to a multiple of --batch-size (default: {DEFAULT_SHARD_SIZE})", metavar="N", text=whole))
    merge: bool = field(default=False, metadata=_ray(
        "publish one self-contained file instead of an index of virtual datasets over the shards "
        "(which must then stay in <output>.parts beside it)", action="store_true"))

    def __post_init__(self) -> None:
        # Paths and one layer name are accepted as the command line's text would give them.
        if self.shard_size is None:
            object.__setattr__(self, "shard_size", DEFAULT_SHARD_SIZE)
        for name in ("backbone", "weights"):
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        object.__setattr__(self, "layers", _layer_names(self.layers))
        _check_counts_and_model(self)
        _check_choices(self)

    def keywords(self) -> dict[str, Any]:
        """The settings as :func:`extract.extract_features`'s keywords.

        Examples
        --------
        >>> ExtractSettings(pooling="avg").keywords()["pooling"]
        'avg'
        """
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _layer_names(layers: Any) -> Any:
    """One layer name or several as a tuple; anything else as given, for the check to name."""
    names = (layers,) if isinstance(layers, str) else layers
    if isinstance(names, Iterable) and not isinstance(names, (bytes, dict)):
        names = tuple(names)
        if names and all(isinstance(name, str) and name for name in names):
            return names
    return layers


def _check_counts_and_model(s: ExtractSettings) -> None:
    """The whole numbers, the layers, the backbone (as the family that claims it says), the
    layout, and the layers the engine can take in one pass."""
    for name in COUNTS:
        value = getattr(s, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise SettingsError(f"{named(name)} must be a whole number of at least 1, got {value!r}")
    if s.layers is not None and (not isinstance(s.layers, tuple) or not s.layers
                                 or not all(isinstance(layer, str) and layer for layer in s.layers)):
        raise SettingsError(f"layers (--layer) must be a list of layer names, got {s.layers!r}")
    layers = list(s.layers) if s.layers is not None else None
    # What the run leaves out, the family that claims the backbone says (an unknown one: refused here).
    if s.pooling is None:
        object.__setattr__(s, "pooling", default_pooling(s.backbone, s.weights))
    if s.interpolation is None:
        object.__setattr__(s, "interpolation", default_interpolation(s.backbone, s.weights))
    check_backbone_settings(s.backbone, s.weights, s.pooling, s.image_size, s.precision, layers, s.preprocess)
    if s.layout is not None:
        layout_named(s.layout)
    if s.manifest is not None and s.layout not in (None, "manifest"):
        raise SettingsError(f"manifest (--manifest) is read by the manifest layout, not {s.layout!r}: "
                            "leave out --layout")
    if s.engine == "ray" and s.layers is not None and len(s.layers) > 1:
        raise SettingsError("several layers (--layer) in one pass run on the local engine; "
                            "run the Ray engine once per layer")


def _check_choices(s: ExtractSettings) -> None:
    """The settings that take one of a few values, and the Ray workers' CPUs."""
    if s.interpolation not in INTERPOLATIONS:
        raise SettingsError(f"{named('interpolation')} must be one of {', '.join(sorted(INTERPOLATIONS))}, "
                            f"got {s.interpolation!r}")
    if s.decoder is not None and s.decoder not in DECODERS:
        raise SettingsError(f"{named('decoder')} must be one of {', '.join(DECODERS)}, got {s.decoder!r}")
    if s.decoder == "processes" and default_decoder() != "processes":
        raise SettingsError(f'{named("decoder")} "processes" needs a platform that forks (Linux); '
                            'use "threads"')
    for name, allowed in (("augment", AUGMENTS), ("dtype", FEATURE_DTYPES), ("engine", ENGINES)):
        value = getattr(s, name)
        if value not in allowed:
            raise SettingsError(f"{named(name)} must be one of {', '.join(allowed)}, got {value!r}")
    cpus = s.cpus_per_worker
    if not isinstance(cpus, numbers.Real) or isinstance(cpus, bool) or not cpus > 0:
        raise SettingsError(f"{named('cpus_per_worker')} must be more than 0, got {cpus}")
    if cpus > 1 and cpus != int(cpus):
        raise SettingsError(f"{named('cpus_per_worker')}: Ray reserves whole CPUs above 1, got {cpus}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every :class:`ExtractSettings` field to ``parser`` as an option (dest: the keyword),
    the Ray engine's in a group of their own. ``--layout``'s and ``--pooling``'s choices are
    those registered when it is called.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> parser.parse_args(["--layer", "fc2", "-q"]).layers, parser.parse_args(["-q"]).progress
    (['fc2'], False)
    """
    add_arguments_from(ExtractSettings, parser, groups={RAY_GROUP: RAY_DESCRIPTION})


def keywords_of(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`extract.extract_features`'s keywords from parsed command-line ``args`` (checked
    when the call makes its :class:`ExtractSettings`).

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> keywords_of(parser.parse_args(["--exclude-class", "x"]))["exclude_classes"]
    ['x']
    """
    return keywords_from(ExtractSettings, args)


def option_table() -> str:
    """The Markdown table of stage 1's settings: flag, keyword, default, meaning.

    Examples
    --------
    >>> option_table().splitlines()[2].split(" | ")[:2]
    ['| `--layout`', '`layout`']
    """
    return option_table_of(ExtractSettings)
