"""The ``keras.applications`` family: the 40 models of :data:`extract.zoo.ZOO`.

Each is used with that model's own ``preprocess_input``, from its input up to one or more
layers named in ``--layer`` (by default its last convolutional map, without the classifier
top). Adding a model is one entry of :data:`extract.zoo.ZOO`. Weights:

``imagenet``
    Keras' own ImageNet weights, downloaded once into Keras' cache (``~/.keras/models``).
a path
    A weights file for the chosen backbone (``.weights.h5`` or legacy ``.h5``): without its top,
    or with it for layers of the top.
None
    Random weights, for architecture checks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from ..zoo import ZOO
from .family import BackboneRequest, BaseBackboneFamily
from .loaded import PRECISIONS, Backbone, LoadedBackbone, Preprocess, WeightsError, _keras_cache, sha256_file
from .outputs import _fresh_names, _under_policy, feature_model

#: Every ``keras.applications`` model, by ``--backbone`` name.
BACKBONES: dict[str, Backbone] = {entry["name"]: Backbone.from_zoo(entry) for entry in ZOO}


class KerasApplicationsFamily(BaseBackboneFamily):
    """``--backbone NAME`` for the 40 models of :data:`BACKBONES`, with ``imagenet`` weights,
    a weights file, or None (random).

    Examples
    --------
    >>> from extract.backbones import BackboneRequest
    >>> family = KerasApplicationsFamily()
    >>> family.claims("mobilenetv2", "imagenet"), family.claims("alexnet", None)
    (True, False)
    >>> family.weights_identity(BackboneRequest("mobilenetv2", None))
    ('none', 'none')
    """

    name = "keras-applications"
    outputs = ("maps",)
    named_weights = ("imagenet",)

    def claims(self, backbone: str, weights: str | None) -> bool:
        return backbone in BACKBONES

    def entry(self, request: BackboneRequest) -> Backbone:
        """The registry entry a request names."""
        return BACKBONES[request.name]

    def check_settings(self, request: BackboneRequest) -> None:
        """The common checks, the smallest input, and the native size for layers of the top."""
        super().check_settings(request)
        backbone = self.entry(request)
        if request.image_size is not None and request.image_size < backbone.min_size:
            raise SettingsError(f"image_size (--image-size) must be at least {backbone.min_size} for "
                                f"{request.name}, got {request.image_size}")
        top = [layer for layer in request.layers or () if layer in backbone.top_layers]
        if top and request.image_size is not None and request.image_size != backbone.input_size:
            raise SettingsError(
                f"{', '.join(top)} belong to {request.name}'s top, which takes {backbone.input_size}x"
                f"{backbone.input_size} images: leave out image_size (--image-size)"
            )

    def needs_top(self, request: BackboneRequest) -> bool:
        return any(layer in self.entry(request).top_layers for layer in request.layers or ())

    def preprocess_input(self, request: BackboneRequest) -> Preprocess:
        return self.entry(request).preprocess_input

    def planned_attrs(self, request: BackboneRequest) -> dict[str, Any]:
        backbone = self.entry(request)
        return {
            "backbone": request.name,
            "layer": request.layers[0] if request.layers else backbone.feature_layer,
            "image_size": request.image_size or backbone.input_size,
            "preprocessing": backbone.preprocessing,
        }

    def weights_identity(self, request: BackboneRequest) -> tuple[str, str | None]:
        weights = request.weights
        if weights is None:
            return "none", "none"
        if weights == "imagenet":
            backbone = self.entry(request)
            top = request.top or self.needs_top(request)
            cached = _keras_cache() / (backbone.imagenet_top_file if top else backbone.imagenet_file)
            return "imagenet", sha256_file(cached) if cached.is_file() else None
        path = Path(weights).expanduser()
        return path.name, sha256_file(path) if path.is_file() else None

    def refuse_top(self, request: BackboneRequest) -> None:
        """Raise where the model cannot be built with its top as asked."""
        backbone = self.entry(request)
        if request.image_size not in (None, backbone.input_size):
            raise SettingsError(f"{request.name} with its top needs its native {backbone.input_size}x"
                                f"{backbone.input_size} images and weights that include the top")

    def build(self, request: BackboneRequest) -> LoadedBackbone:
        """Build the model the way Keras builds it for the weights asked, under the precision's
        dtype policy, then cut it at the layers asked."""
        backbone = self.entry(request)
        layers = tuple(request.layers or (backbone.feature_layer,))
        top = request.top or self.needs_top(request)
        if top:
            self.refuse_top(request)
        size = request.image_size or backbone.input_size
        precision = request.precision or "float32"
        _fresh_names()
        build = _under_policy(backbone.constructor(), PRECISIONS[precision])
        model, weights_id, sha, weights_path = self.load_weights(
            request, build, dict(include_top=top, input_shape=(size, size, 3)), top, layers)
        return LoadedBackbone(
            backbone=backbone,
            model=feature_model(model, layers, request.pooling, precision),
            weights=weights_id,
            weights_sha256=sha,
            layers=layers,
            pooling=request.pooling,
            image_size=size,
            precision=precision,
            weights_path=weights_path,
            with_top=top,
        )

    def load_weights(self, request: BackboneRequest, build: Callable[..., Any], kwargs: dict[str, Any],
                     top: bool, layers: tuple[str, ...]) -> tuple[Any, str, str, str]:
        """The model built with ``request.weights``: ``(model, weights name, SHA-256, file)``."""
        name, weights, backbone = request.name, request.weights, self.entry(request)
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
            return model, "imagenet", sha256_file(cached) if cached.is_file() else "unknown", ""
        if weights is None:
            return build(weights=None, **kwargs), "none", "none", ""
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"{weights}: no such weights file (choose imagenet, hed-bsds500, or a path)")
        try:
            model = _build_as_imagenet(build, path, kwargs)
        except Exception as exc:  # Keras raises ValueError, KeyError or OSError by file kind
            kind = "with" if top else "without"
            hint = (f"; {', '.join(layers)} need weights with the top, e.g. "
                    f"{backbone.imagenet_top_file}") if top else ""
            raise WeightsError(
                f"{path}: does not fit {name} {kind} its top ({str(exc).splitlines()[0][:200]}){hint}"
            ) from None
        return model, path.name, sha256_file(path), str(path.resolve())


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
