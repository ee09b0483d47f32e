"""The saved-model family: ``--backbone PATH.keras --preprocess MODULE``.

A Keras model file of your own is its own weights: its SHA-256 is the weights' fingerprint, and
its input size and layers are read from it. ``--preprocess`` names the ``keras.applications``
module whose ``preprocess_input`` it expects, or ``none``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from .applications import BACKBONES
from .family import BackboneRequest, BaseBackboneFamily, recorded_weights_file
from .loaded import Backbone, LoadedBackbone, Preprocess, WeightsError, preprocess_function, sha256_file
from .outputs import feature_model

#: ``--preprocess`` choices for a saved model of your own: the registry's preprocessing modules.
PREPROCESS_MODULES = ("none", *sorted({b.module for b in BACKBONES.values()}))

#: The ``preprocess_mode`` of each of :data:`PREPROCESS_MODULES`.
MODULE_PREPROCESS_MODES = {"none": "none", **{b.module: b.preprocess_mode for b in BACKBONES.values()}}


def is_saved_model(name: str) -> bool:
    """True when ``--backbone`` names a saved Keras model file rather than a registry entry.

    Examples
    --------
    >>> is_saved_model("mine.keras"), is_saved_model("vgg16")
    (True, False)
    """
    return str(name).endswith(".keras")


def module_preprocessing(preprocess: str | None) -> str:
    """What a feature file records as the preprocessing of ``--preprocess MODULE``."""
    return "none" if preprocess in (None, "none") else f"keras.applications.{preprocess}.preprocess_input"


class SavedModelFamily(BaseBackboneFamily):
    """``--backbone PATH.keras``: a saved Keras model, run as it was saved (float32), with the
    preprocessing ``--preprocess`` names.

    Examples
    --------
    >>> from extract.backbones import BackboneRequest
    >>> family = SavedModelFamily()
    >>> family.claims("mine.keras", None)
    True
    >>> family.planned_attrs(BackboneRequest("models/mine.keras", preprocess="resnet"))["preprocessing"]
    'keras.applications.resnet.preprocess_input'
    """

    name = "saved-model"
    outputs = ("maps", "tokens")
    takes_preprocess = True

    def claims(self, backbone: str, weights: str | None) -> bool:
        return is_saved_model(backbone)

    def check_settings(self, request: BackboneRequest) -> None:
        """``--preprocess`` is required; the input size and layers are checked once the file is read."""
        file = Path(request.name).expanduser()
        if request.preprocess is None or request.preprocess not in PREPROCESS_MODULES:
            raise SettingsError(f"--backbone {file.name} needs --preprocess (preprocess=): one of "
                                f"{', '.join(PREPROCESS_MODULES)}")
        super().check_settings(request)
        if request.precision not in (None, "float32"):
            raise SettingsError("a saved model runs as it was saved: precision (--precision) must be float32")

    def preprocess_input(self, request: BackboneRequest) -> Preprocess:
        return preprocess_function(request.preprocess)

    def planned_attrs(self, request: BackboneRequest) -> dict[str, Any]:
        return {
            "backbone": Path(request.name).name,
            "layer": request.layers[0] if request.layers else None,  # the file's last layer
            "image_size": request.image_size,  # None: the file's input size, once read
            "preprocessing": module_preprocessing(request.preprocess),
        }

    def weights_identity(self, request: BackboneRequest) -> tuple[str, str | None]:
        path = Path(request.name).expanduser()
        return path.name, sha256_file(path) if path.is_file() else None

    def build(self, request: BackboneRequest) -> LoadedBackbone:
        import keras

        file = Path(request.name).expanduser()
        if not file.is_file():
            raise WeightsError(f"{request.name}: no such Keras model file (--backbone PATH.keras)")
        self.check_settings(request)
        try:
            model = keras.models.load_model(file, compile=False)
        except Exception as exc:  # Keras raises ValueError, OSError or its own errors by fault
            raise WeightsError(f"{file}: not a Keras model file ({str(exc).splitlines()[0][:200]})") from None
        shape, image_size = model.input_shape, request.image_size
        size = shape[1] if shape[1] is not None and shape[1] == shape[2] else image_size
        if size is None:
            raise SettingsError(f"{file.name} takes inputs of any size: give image_size (--image-size)")
        if image_size is not None and image_size != size:
            raise SettingsError(f"{file.name} takes {size}x{size} images, not image_size {image_size}")
        layers = tuple(request.layers or (model.layers[-1].name,))
        preprocess = request.preprocess or "none"
        backbone = Backbone(
            name=file.name, module=preprocess, input_size=size, min_size=size,
            preprocessing=module_preprocessing(preprocess), preprocess_in_model=preprocess == "none",
            preprocess_mode=MODULE_PREPROCESS_MODES[preprocess], feature_layer=layers[0],
        )
        return LoadedBackbone(
            backbone=backbone, model=feature_model(model, layers, request.pooling, "float32"),
            weights=file.name, weights_sha256=sha256_file(file), layers=layers, pooling=request.pooling,
            image_size=size, precision="float32", weights_path=str(file.resolve()),
        )

    def rebuild_arguments(self, attrs: Mapping[str, Any], weights: str | None = None) -> dict[str, Any]:
        """The model file is its own weights: ``weights`` when given, else the file extraction
        read (where it still is, unchanged); ``--preprocess`` from the recorded preprocessing."""
        arguments = super().rebuild_arguments(attrs, None if weights is None else str(weights))
        recorded = str(attrs.get("preprocessing") or "none")
        modules = {module_preprocessing(module): module for module in PREPROCESS_MODULES}
        if recorded not in modules:
            raise SettingsError(f"preprocessing {recorded!r} of a saved model is none of "
                                f"--preprocess {', '.join(PREPROCESS_MODULES)}")
        return {**arguments, "name": arguments["weights"], "weights": None, "preprocess": modules[recorded],
                "top": False}

    def rebuild_weights(self, attrs: Mapping[str, Any], weights: str | None = None) -> str | None:
        return str(weights) if weights is not None else recorded_weights_file(attrs)
