"""Stage 1 of featurebank: images → pretrained CNN → one HDF5 feature file.

From Python, one call does a whole run (the same as ``python -m extract``)::

    from extract import extract_features
    summary = extract_features("flowers17", data_dir="../shared/datasets",
                               backbone="mobilenetv2", weights="mobilenetv2_notop.weights.h5",
                               pooling="avg", output="f17.hdf5")

The pieces are usable on their own: ``sources`` (datasets and what a listing holds),
``layouts`` (how a dataset becomes a listing), ``images`` (decoding), ``backbones`` (the
backbone families, their registry and weights), ``devices`` (what the device computes fast),
``plan`` (what a run must do), ``pipeline`` (the local engine), ``ray_engine`` (the Ray
engine), ``settings`` (a run's settings declared once: keywords, options, checks) and
``options`` (the generic part of declaring settings once, which both stages use).

Two doors take new entries from outside the package, each one registration call:
:func:`register_backbone_family` (a new kind of backbone, see
:class:`extract.backbones.BackboneFamily`) and :func:`register_layout` (a new dataset layout,
see :class:`extract.layouts.DatasetLayout`).
"""

from . import tf_logs  # noqa: F401 - quiets TensorFlow's C++ logs before anything imports it
from .api import extract_features, verify_features
from .backbones import (
    BACKBONES,
    BackboneFamily,
    BackboneRequest,
    BaseBackboneFamily,
    LoadedBackbone,
    WeightsError,
    family_for,
    load_backbone,
    rebuild_arguments,
    rebuild_backbone,
    register_backbone_family,
    unregister_backbone_family,
)
from .errors import ExtractError, ExtractInterrupted, SettingsError
from .layouts import DatasetLayout, register_layout, unregister_layout
from .pipeline import ExtractSummary
from .sources import DatasetError, ImageListing, list_images, resolve_dataset

__all__ = [
    "BACKBONES",
    "BackboneFamily",
    "BackboneRequest",
    "BaseBackboneFamily",
    "DatasetError",
    "DatasetLayout",
    "ExtractError",
    "ExtractInterrupted",
    "ExtractSummary",
    "ImageListing",
    "LoadedBackbone",
    "SettingsError",
    "WeightsError",
    "extract_features",
    "family_for",
    "list_images",
    "load_backbone",
    "rebuild_arguments",
    "rebuild_backbone",
    "register_backbone_family",
    "register_layout",
    "resolve_dataset",
    "unregister_backbone_family",
    "unregister_layout",
    "verify_features",
]
