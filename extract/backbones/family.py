"""The protocol a backbone family follows, and a base class that does the common part.

A *family* is a kind of backbone: the ``keras.applications`` models, a saved ``.keras`` file,
VGG16 with HED's weights, or one of your own. :func:`extract.backbones.load_backbone` and
``extract_features`` ask the registry for the family that claims a ``(backbone, weights)``
request (:func:`extract.backbones.family_for`) and leave every question about that kind of
model to it: which settings make sense, how images are preprocessed, how the model is built
and its weights fingerprinted, what a feature file records, and how that record is rebuilt.

A new family is one module with a class that follows :class:`BackboneFamily` (most simply a
subclass of :class:`BaseBackboneFamily`) and one call of
:func:`extract.register_backbone_family`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import SettingsError
from .loaded import PRECISIONS, LoadedBackbone, Preprocess, WeightsError, sha256_file
from .outputs import poolings_of


@dataclass(frozen=True)
class BackboneRequest:
    """What :func:`extract.backbones.load_backbone` is asked to build: its arguments.

    Parameters
    ----------
    name : str
        ``--backbone``: a registry name, a model file, or whatever a family claims.
    weights : str or None
        ``--weights``: a name (``"imagenet"``), a file, or None (random weights).
    pooling : str
        ``--pooling``: how each layer's output becomes a row (see
        :data:`extract.backbones.POOLINGS_BY_OUTPUT`).
    image_size : int or None
        ``--image-size``; None: the backbone's own.
    precision : str or None
        ``--precision``, one of :data:`extract.backbones.PRECISIONS`; None: not chosen yet (the
        settings are checked before the device's default is known).
    layers : tuple of str or None
        ``--layer``; None: the backbone's default feature layer.
    preprocess : str or None
        ``--preprocess``, for families that take it (a saved model).
    top : bool
        Build with the classifier top even if no layer of ``layers`` needs it.
    """

    name: str
    weights: str | None = "imagenet"
    pooling: str = "flatten"
    image_size: int | None = None
    precision: str | None = "float32"
    layers: tuple[str, ...] | None = None
    preprocess: str | None = None
    top: bool = False


@runtime_checkable
class BackboneFamily(Protocol):
    """A kind of backbone: how requests for it are checked, built, fingerprinted and recorded.

    Attributes
    ----------
    name : str
        The family's registry name, recorded in feature files as ``backbone_family``.
    outputs : tuple of str
        The kinds of output its layers give: ``"maps"`` (4-D feature maps) and/or
        ``"tokens"`` (3-D token sequences); the poolings it takes are those of these kinds
        (:data:`extract.backbones.POOLINGS_BY_OUTPUT`). Vector layers are taken as they are.
    named_weights : tuple of str
        The ``--weights`` names it reads that are not files (``"imagenet"``): a feature file
        made with one of them is rebuilt by name.

    Examples
    --------
    >>> from extract.backbones import family_for
    >>> family = family_for("vgg16", "hed-bsds500")
    >>> family.name, isinstance(family, BackboneFamily)
    ('hed', True)
    """

    name: str
    outputs: tuple[str, ...]
    named_weights: tuple[str, ...]

    def claims(self, backbone: str, weights: str | None) -> bool:
        """True when this family builds ``backbone`` with ``weights`` (cheap: no file is read)."""
        ...

    def check_settings(self, request: BackboneRequest) -> None:
        """Raise :class:`extract.errors.SettingsError`, one line naming the setting and the
        fix, for settings that make no sense for this family (alone or together)."""
        ...

    def needs_top(self, request: BackboneRequest) -> bool:
        """True when a layer of ``request.layers`` exists only in the model with its top."""
        ...

    def preprocess_input(self, request: BackboneRequest) -> Preprocess:
        """The function from float32 RGB images in [0, 255] to the model's input."""
        ...

    def planned_attrs(self, request: BackboneRequest) -> dict[str, Any]:
        """What feature files will record, known before building: ``backbone`` (its recorded
        name), ``layer`` (of the first layer), ``image_size`` and ``preprocessing``; None
        where only the built model tells (a saved model's input size)."""
        ...

    def weights_identity(self, request: BackboneRequest) -> tuple[str, str | None]:
        """The weights' recorded name and SHA-256, found without building the model (the
        SHA-256 is None where the file is not there yet)."""
        ...

    def build(self, request: BackboneRequest) -> LoadedBackbone:
        """Build the model to the outputs of ``request.layers``, pooled by their rank (see
        :func:`extract.backbones.feature_model`), with its weights; raise
        :class:`extract.backbones.WeightsError` (one line) for weights that cannot be had."""
        ...

    def provenance(self, loaded: LoadedBackbone, index: int = 0) -> dict[str, Any]:
        """The attributes the feature file of ``loaded``'s ``index``-th layer records of the
        backbone: plain values (see :func:`standard_provenance`)."""
        ...

    def rebuild_arguments(self, attrs: Mapping[str, Any], weights: str | None = None) -> dict[str, Any]:
        """The :func:`extract.backbones.load_backbone` keyword arguments that rebuild the
        backbone a feature file's ``attrs`` record; ``weights`` overrides where the weights
        come from. Raise :class:`extract.backbones.WeightsError` where they cannot be found."""
        ...


def standard_provenance(loaded: LoadedBackbone, index: int = 0) -> dict[str, Any]:
    """What every feature file records of the backbone of its (``index``-th) layer.

    Examples
    --------
    >>> sorted(standard_provenance(loaded))  # doctest: +SKIP
    ['backbone', 'image_size', 'layer', 'pooling', 'precision', 'preprocessing', 'weights', ...]
    """
    return {
        "backbone": loaded.backbone.name,
        "layer": loaded.layers[index],
        "weights": loaded.weights,
        "weights_sha256": loaded.weights_sha256,
        # Where the weights file was read, so that predict finds it while it stays there.
        "weights_path": loaded.weights_path,
        # Built with its top: predict rebuilds it so, whatever the layer (same weights file).
        "with_top": loaded.with_top,
        "pooling": loaded.pooling,
        "image_size": loaded.image_size,
        "preprocessing": loaded.backbone.preprocessing,
        "precision": loaded.precision,
    }


def recorded_weights_file(attrs: Mapping[str, Any]) -> str:
    """The weights file a feature file's ``attrs`` were computed from, where extraction read it,
    when it is still there unchanged (same SHA-256); else a :class:`WeightsError`.

    Examples
    --------
    >>> recorded_weights_file({"weights": "w.h5", "weights_path": "/gone/w.h5"})
    Traceback (most recent call last):
    ...
    extract.backbones.loaded.WeightsError: the features came from the weights file /gone/w.h5, \
which is no longer there (moved or deleted); pass --weights PATH to that file
    """
    recorded = attrs.get("weights_path")
    name = attrs.get("weights")
    if not recorded:  # files extracted before the path was recorded
        raise WeightsError(f"the features came from the weights file {name}, whose place was not "
                           "recorded; pass --weights PATH to that file")
    if not Path(recorded).is_file():
        raise WeightsError(f"the features came from the weights file {recorded}, which is no longer "
                           "there (moved or deleted); pass --weights PATH to that file")
    if sha256_file(recorded) != attrs.get("weights_sha256"):
        raise WeightsError(f"the features came from the weights file {recorded}, which has changed "
                           "since (other SHA-256); pass --weights PATH to the file as it was")
    return str(recorded)


class BaseBackboneFamily:
    """The common part of a family: checks of pooling, precision, layers and ``--preprocess``,
    the standard provenance, and rebuilding from it. A subclass sets :attr:`name` (and
    :attr:`outputs`, :attr:`named_weights`) and gives :meth:`claims`,
    :meth:`preprocess_input`, :meth:`planned_attrs`, :meth:`weights_identity` and
    :meth:`build`.

    Examples
    --------
    >>> class Tiny(BaseBackboneFamily):  # doctest: +SKIP
    ...     name = "tiny"
    ...     def claims(self, backbone, weights):
    ...         return backbone == "tiny"
    """

    name = "base"
    outputs: tuple[str, ...] = ("maps",)
    named_weights: tuple[str, ...] = ()
    #: Whether ``--preprocess`` means something to this family.
    takes_preprocess = False

    def default_interpolation(self, backbone: str, weights: str | None) -> str:
        """The resize filter images get when ``--interpolation`` names none: ``nearest``, as
        ``keras.utils.load_img`` (the published recipe) resizes."""
        return "nearest"

    def default_pooling(self, backbone: str, weights: str | None) -> str:
        """The pooling of a run that names no ``--pooling``: ``flatten``, the whole last map,
        as the published recipe keeps it."""
        return "flatten"

    def claims(self, backbone: str, weights: str | None) -> bool:
        raise NotImplementedError

    @property
    def poolings(self) -> tuple[str, ...]:
        """The poolings of this family's kinds of output."""
        return poolings_of(self.outputs)

    def check_settings(self, request: BackboneRequest) -> None:
        """Refuse a pooling none of :attr:`outputs` takes, an unknown precision, a layer named
        twice, and ``--preprocess`` where it means nothing."""
        if request.pooling not in self.poolings:
            raise SettingsError(f"pooling (--pooling) must be one of {', '.join(self.poolings)} for "
                                f"{request.name}, got {request.pooling!r}")
        if request.precision is not None and request.precision not in PRECISIONS:
            raise SettingsError(
                f"precision (--precision) must be one of {', '.join(PRECISIONS)}, got {request.precision!r}"
            )
        layers = request.layers
        if layers is not None and len(set(layers)) != len(layers):
            raise SettingsError(f"layers (--layer) names a layer twice: {', '.join(layers)}")
        if request.preprocess is not None and not self.takes_preprocess:
            raise SettingsError(
                "preprocess (--preprocess) is for a saved model (--backbone PATH.keras); "
                f"{request.name} uses its own preprocessing"
            )

    def needs_top(self, request: BackboneRequest) -> bool:
        return False

    def preprocess_input(self, request: BackboneRequest) -> Preprocess:
        raise NotImplementedError

    def planned_attrs(self, request: BackboneRequest) -> dict[str, Any]:
        raise NotImplementedError

    def weights_identity(self, request: BackboneRequest) -> tuple[str, str | None]:
        raise NotImplementedError

    def build(self, request: BackboneRequest) -> LoadedBackbone:
        raise NotImplementedError

    def provenance(self, loaded: LoadedBackbone, index: int = 0) -> dict[str, Any]:
        """:func:`standard_provenance`, and the family's name as ``backbone_family``."""
        return {**standard_provenance(loaded, index), "backbone_family": self.name}

    def rebuild_arguments(self, attrs: Mapping[str, Any], weights: str | None = None) -> dict[str, Any]:
        """The recorded settings; weights: ``weights`` when given, named weights by name,
        ``"none"`` as None (random), else the recorded file (:func:`recorded_weights_file`)."""
        return {**recorded_arguments(attrs), "weights": self.rebuild_weights(attrs, weights)}

    def rebuild_weights(self, attrs: Mapping[str, Any], weights: str | None = None) -> str | None:
        """Where :meth:`rebuild_arguments` takes the weights from."""
        recorded = attrs.get("weights")
        if weights is not None:
            return str(weights)
        if recorded in self.named_weights:
            return str(recorded)
        if recorded in (None, "none"):
            return None
        return recorded_weights_file(attrs)


def recorded_arguments(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The :func:`extract.backbones.load_backbone` arguments a feature file records directly:
    backbone, pooling, image size, precision, layer and top.

    Examples
    --------
    >>> recorded_arguments({"backbone": "vgg16", "layer": "fc2", "image_size": 224})["layers"]
    ['fc2']
    """
    layer = attrs.get("layer")
    size = attrs.get("image_size")
    return {
        "name": str(attrs["backbone"]),
        "pooling": str(attrs.get("pooling") or "flatten"),
        "image_size": int(size) if size is not None else None,
        "precision": str(attrs.get("precision") or "float32"),
        "layers": [str(layer)] if layer else None,
        "preprocess": None,
        "top": bool(attrs.get("with_top", False)),
    }


def layers_of(layers: Sequence[str] | None) -> tuple[str, ...] | None:
    """``--layer`` as a request holds it."""
    return tuple(layers) if layers is not None else None
