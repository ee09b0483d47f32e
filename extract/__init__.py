"""Stage 1 of featurebank: images → pretrained CNN → one HDF5 feature file.

From Python, one call does a whole run (the same as ``python -m extract``)::

    from extract import extract_features
    summary = extract_features("flowers17", data_dir="../shared/datasets",
                               backbone="mobilenetv2", weights="mobilenetv2_notop.weights.h5",
                               pooling="avg", output="f17.hdf5")

The pieces are usable on their own: ``sources`` (datasets and image listing), ``images``
(decoding), ``backbones`` (the model registry and weights), ``plan`` (what a run must do),
``pipeline`` (the local engine) and ``ray_engine`` (the Ray engine).
"""

from . import tf_logs  # noqa: F401 - quiets TensorFlow's C++ logs before anything imports it
from .api import extract_features
from .backbones import BACKBONES, LoadedBackbone, WeightsError, load_backbone
from .errors import ExtractError, ExtractInterrupted, SettingsError
from .pipeline import ExtractSummary
from .sources import DatasetError, ImageListing, list_images, resolve_dataset

__all__ = [
    "BACKBONES",
    "DatasetError",
    "ExtractError",
    "ExtractInterrupted",
    "ExtractSummary",
    "ImageListing",
    "LoadedBackbone",
    "SettingsError",
    "WeightsError",
    "extract_features",
    "list_images",
    "load_backbone",
    "resolve_dataset",
]
