"""What every backbone family hands back: a :class:`LoadedBackbone` (a built model ready for
inference, with what identifies its weights), described by a :class:`Backbone`."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExtractError

#: ``--precision`` choices: the Keras dtype policy each one builds the model under. Weights
#: stay float32; layers compute in the lower precision; features are stored as ``--dtype``.
PRECISIONS = {
    "float32": "float32",
    "bf16": "mixed_bfloat16",  # CPUs with AVX512-BF16 or AMX; recent GPUs
    "fp16": "mixed_float16",  # GPUs (tensor cores); slow on CPUs
}

#: A backbone's input preprocessing: float32 RGB images ``(n, h, w, 3)`` in [0, 255] to the
#: model's input. It must work pixel by pixel (the decoders preprocess one image at a time).
Preprocess = Callable[[np.ndarray], np.ndarray]


class WeightsError(ExtractError):
    """Weights that cannot be had or do not fit; the message is one line for the user."""


@dataclass(frozen=True)
class Backbone:
    """What a built backbone is: its name, input and preprocessing, and for a
    ``keras.applications`` model the data of its entry (see :mod:`extract.zoo`, which holds the
    40 entries and how each fact was found). A family of your own needs only ``name``,
    ``input_size``, ``feature_layer``, ``preprocessing`` and ``preprocess``.

    Parameters
    ----------
    name : str
        The ``--backbone`` name.
    application : str
        Constructor in ``keras.applications``, e.g. ``"VGG16"`` (empty for other families).
    module : str
        Its module in ``keras.applications``, which holds its ``preprocess_input`` and
        ``decode_predictions`` (``"none"``: no such module).
    input_size, min_size : int
        Side of the square input the weights were trained at, and the smallest side the
        architecture accepts without its top.
    preprocessing : str
        What its preprocessing does, as recorded in feature files.
    preprocess_in_model : bool
        The model's own first layers normalise ``[0, 255]`` RGB (``preprocess_input`` is the
        identity): EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3.
    preprocess_mode : {"caffe", "tf", "torch", "none"}
        The ``imagenet_utils.preprocess_input`` mode of its ``preprocess_input`` (``none``: the
        identity, or a preprocessing of a family's own), which ``classify export`` rebuilds as
        Keras layers.
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
    preprocess : callable, optional
        A family's own preprocessing (:data:`Preprocess`); None: ``module``'s
        ``preprocess_input``.
    """

    name: str
    application: str = ""
    module: str = "none"
    input_size: int = 0
    min_size: int = 0
    preprocessing: str = "none"
    preprocess_in_model: bool = False
    preprocess_mode: str = "none"
    feature_layer: str = ""
    top_layers: tuple[str, ...] = ()
    flatten_dim: int = 0
    avg_dim: int = 0
    imagenet_file: str = ""
    imagenet_top_file: str = ""
    imagenet_url_base: str = ""
    params: int = 0
    depth: int | None = None
    top1: float | None = None
    top5: float | None = None
    imagenet_only_layers: tuple[str, ...] = ()
    preprocess: Preprocess | None = field(default=None, compare=False, repr=False)

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
        if self.preprocess is not None:
            return self.preprocess(images)
        return preprocess_function(self.module)(images)


def preprocess_function(module: str | None) -> Preprocess:
    """``keras.applications.<module>.preprocess_input``, or the identity for ``None``/``"none"``."""
    if module in (None, "none"):
        return lambda images: images
    import keras

    return getattr(keras.applications, module).preprocess_input


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
    ``pooling`` says; :meth:`embed_all` gives the rows of every layer from one run. ``family``
    is the :class:`extract.backbones.BackboneFamily` that built it (set by
    :func:`extract.backbones.load_backbone`), which says what feature files record of it.
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
    family: Any = field(default=None, compare=False, repr=False)

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
    """The SHA-256 of a file, in hex: what feature files record of a weights file.

    Examples
    --------
    >>> sha256_file("model.weights.h5")  # doctest: +SKIP
    '80b852b0...'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"
