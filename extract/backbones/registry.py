"""The registry of backbone families, and the calls that dispatch a request to its family.

:func:`load_backbone`, :func:`check_backbone_settings`, :func:`weights_identity`,
:func:`needs_top` and :func:`recorded_preprocessing` keep the signatures they had before
families existed; each asks :func:`family_for` which family a request belongs to and leaves
the rest to it. :func:`rebuild_arguments` and :func:`rebuild_backbone` turn a feature file's
recorded attributes back into the backbone that computed them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import SettingsError
from .family import BackboneFamily, BackboneRequest, layers_of
from .loaded import LoadedBackbone, WeightsError
from .outputs import poolings_of

#: The registered families, in registration order; :func:`family_for` asks the newest first.
FAMILIES: dict[str, BackboneFamily] = {}


def register_backbone_family(family: BackboneFamily, *, replace: bool = False) -> BackboneFamily:
    """Register ``family`` (a :class:`BackboneFamily`) under ``family.name``: from then on
    ``load_backbone``, ``extract_features`` and ``python -m extract`` build the requests it
    claims. Families registered later are asked first, so one of your own can take over
    requests a built-in family would claim; a replacement (``replace=True``) is asked where the
    family it replaces was. Returns ``family``. The registry is per process: for
    ``engine="ray"`` register it at the import of a module that the Ray workers import too.

    Raises :class:`~extract.errors.SettingsError` (a ``ValueError``) when ``family`` lacks a
    part of the protocol, or its name is taken unless ``replace``
    (:func:`unregister_backbone_family` frees a name).

    Examples
    --------
    >>> from extract import register_backbone_family
    >>> register_backbone_family(MyFamily())  # doctest: +SKIP
    >>> with registered_backbone_family(MyFamily()):  # for the length of a block  # doctest: +SKIP
    ...     extract_features("photos", backbone="mine", weights=None)
    """
    if not isinstance(family, BackboneFamily):
        missing = [name for name in ("name", "outputs", "named_weights", *_METHODS)
                   if not hasattr(family, name)]
        raise SettingsError(f"{family!r} is not a BackboneFamily: it lacks {', '.join(missing)}")
    if family.name in FAMILIES and not replace:
        raise SettingsError(f"a backbone family named {family.name!r} is registered already; "
                         "pass replace=True to replace it")
    unknown = set(family.outputs) - {"maps", "tokens"}
    if unknown:
        raise SettingsError(f"family {family.name!r}: outputs {sorted(unknown)} are none of maps, tokens")
    FAMILIES[family.name] = family  # a name already there keeps its place in the order of asking
    return family


_METHODS = ("claims", "check_settings", "needs_top", "preprocess_input", "planned_attrs",
            "weights_identity", "build", "provenance", "rebuild_arguments")


def unregister_backbone_family(name: str) -> BackboneFamily:
    """Remove the family registered as ``name`` and return it.

    Examples
    --------
    >>> unregister_backbone_family("tiny")  # doctest: +SKIP
    """
    try:
        return FAMILIES.pop(name)
    except KeyError:
        raise SettingsError(f"no backbone family named {name!r} is registered") from None


@contextlib.contextmanager
def registered_backbone_family(family: BackboneFamily) -> Iterator[BackboneFamily]:
    """Register ``family`` for the length of a ``with`` block (tests, notebooks).

    Examples
    --------
    >>> with registered_backbone_family(MyFamily()) as family:  # doctest: +SKIP
    ...     load_backbone("mine", None)
    """
    register_backbone_family(family)
    try:
        yield family
    finally:
        FAMILIES.pop(family.name, None)


def family_for(backbone: str, weights: str | None) -> BackboneFamily:
    """The family that builds ``backbone`` with ``weights``: the newest registered one that
    claims them. Raises :class:`SettingsError` when none does.

    Examples
    --------
    >>> family_for("vgg16", "imagenet").name, family_for("mine.keras", None).name
    ('keras-applications', 'saved-model')
    """
    for family in reversed(FAMILIES.values()):
        if family.claims(backbone, weights):
            return family
    raise SettingsError(
        f"unknown backbone (--backbone) {backbone!r}; see python -m extract --list-backbones, "
        "or give a saved model's PATH.keras"
    )


def family_named(name: str) -> BackboneFamily:
    """The family registered as ``name``; :class:`SettingsError` when there is none.

    Examples
    --------
    >>> family_named("hed").named_weights
    ('hed-bsds500',)
    """
    if name not in FAMILIES:
        raise SettingsError(f"backbone family {name!r} is not registered (registered: "
                            f"{', '.join(FAMILIES)}): import the module that registers it")
    return FAMILIES[name]


def all_poolings() -> tuple[str, ...]:
    """``--pooling``'s choices: the poolings of every registered family's outputs.

    Examples
    --------
    >>> all_poolings()
    ('flatten', 'avg', 'max', 'cls', 'mean', 'cls+mean')
    """
    return poolings_of([kind for family in FAMILIES.values() for kind in family.outputs])


def _family_and_request(name: str, weights: str | None = "imagenet", pooling: str = "flatten",
            image_size: int | None = None, precision: str | None = "float32",
            layers: Sequence[str] | None = None, preprocess: str | None = None, top: bool = False
            ) -> tuple[BackboneFamily, BackboneRequest]:
    """The family and request of :func:`load_backbone`'s arguments."""
    asked = BackboneRequest(str(name), None if weights is None else str(weights), pooling, image_size,
                            precision, layers_of(layers), preprocess, top)
    return family_for(asked.name, asked.weights), asked


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
    the features of ``layers`` (default: the backbone's default feature layer), pooled as
    ``pooling`` says: the family that claims ``(name, weights)`` (:func:`family_for`) builds it.

    The built-in families: a ``keras.applications`` name with ``"imagenet"``, a weights file
    or None (random, for architecture checks); ``vgg16`` with ``"hed-bsds500"`` (HED's
    convolutions); the path of a saved Keras model (``.keras``; then ``preprocess`` names the
    ``keras.applications`` module whose ``preprocess_input`` it expects, or ``"none"``, and
    ``weights`` is not used). Layers of the top (VGG16's ``fc2``, every model's
    ``predictions``) build the model with its top, at its native input size, and need weights
    that include it. Pooling applies by each output's rank: maps and token sequences are
    pooled, vector layers (``fc2``) are taken as they are. ``top`` builds the model with its
    top even when no layer of ``layers`` needs it: a layer below the top, extracted in a run
    that also took a top layer, is then computed (and later re-extracted) by the same model,
    with the same weights file.

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
    family, asked = _family_and_request(name, weights, pooling, image_size, precision, layers, preprocess,
                                        top)
    family.check_settings(asked)
    loaded = family.build(asked)
    if loaded.family is None:
        loaded = dataclasses.replace(loaded, family=family)
    return loaded


def check_backbone_settings(
    name: str, weights: str | None, pooling: str, image_size: int | None, precision: str | None,
    layers: Sequence[str] | None = None, preprocess: str | None = None,
) -> None:
    """Raise :class:`SettingsError` for backbone settings that make no sense (alone or
    together), as the family that claims them says; one line naming the setting and the fix.

    Examples
    --------
    >>> check_backbone_settings("vgg16", "imagenet", "avg", 16, None)
    Traceback (most recent call last):
    ...
    extract.errors.SettingsError: image_size (--image-size) must be at least 32 for vgg16, got 16
    """
    family, asked = _family_and_request(name, weights, pooling, image_size, precision, layers, preprocess)
    family.check_settings(asked)


def default_interpolation(name: str, weights: str | None) -> str:
    """The resize filter of a run that names no ``--interpolation``, as the family that claims
    the backbone says (``nearest`` for a family that says nothing).

    Examples
    --------
    >>> default_interpolation("vgg16", "imagenet"), default_interpolation("keras_hub:dinov2_base", None)
    ('nearest', 'bilinear')
    """
    return _family_default("interpolation", name, weights)


def default_pooling(name: str, weights: str | None) -> str:
    """The pooling of a run that names no ``--pooling``, as the family that claims the backbone
    says (``flatten`` for a family that says nothing).

    Examples
    --------
    >>> default_pooling("vgg16", "imagenet"), default_pooling("keras_hub:clip_vit_base_patch16", None)
    ('flatten', 'cls')
    >>> default_pooling("keras_hub:siglip_base_patch16_224", None)
    'mean'
    """
    return _family_default("pooling", name, weights)


#: What a run gets for a setting it leaves out from a family that says nothing of it.
_FALLBACKS = {"pooling": "flatten", "interpolation": "nearest"}


def _family_default(setting: str, name: str, weights: str | None) -> str:
    """``setting``'s default as the family that claims the backbone says (its
    ``default_<setting>``, optional for families of one's own), else :data:`_FALLBACKS`'."""
    method = getattr(family_for(name, weights), f"default_{setting}", None)
    return method(name, weights) if method is not None else _FALLBACKS[setting]


def needs_top(name: str, layers: Sequence[str] | None, weights: str | None = "imagenet") -> bool:
    """True when one of ``layers`` exists only in the model with its top.

    Examples
    --------
    >>> needs_top("vgg16", ["fc2"]), needs_top("vgg16", ["block5_pool"])
    (True, False)
    """
    family, asked = _family_and_request(name, weights, layers=layers)
    return family.needs_top(asked)


def weights_identity(name: str, weights: str | None, layers: Sequence[str] | None = None
                     ) -> tuple[str, str | None]:
    """The name and SHA-256 that :func:`load_backbone` will record for ``weights``, found
    without building the model (None where the file is not there yet).

    Examples
    --------
    >>> weights_identity("mobilenetv2", None)
    ('none', 'none')
    """
    family, asked = _family_and_request(name, weights, layers=layers)
    return family.weights_identity(asked)


def recorded_preprocessing(name: str, preprocess: str | None = None, weights: str | None = "imagenet") -> str:
    """What a feature file records as the preprocessing of backbone ``name`` (a registry name,
    or a saved model's path with its ``preprocess`` module).

    Examples
    --------
    >>> recorded_preprocessing("mine.keras", "resnet")
    'keras.applications.resnet.preprocess_input'
    """
    family, asked = _family_and_request(name, weights, preprocess=preprocess)
    return str(family.planned_attrs(asked)["preprocessing"])


def attrs_family(attrs: Mapping[str, Any]) -> BackboneFamily:
    """The family that made a feature file: the one it records (``backbone_family``), or, for
    files written before families were recorded, the one that claims its backbone and weights.

    Examples
    --------
    >>> attrs_family({"backbone": "vgg16", "weights": "hed-bsds500"}).name
    'hed'
    """
    if attrs.get("backbone_family"):
        return family_named(str(attrs["backbone_family"]))
    weights = attrs.get("weights")
    return family_for(str(attrs["backbone"]), None if weights in (None, "none") else str(weights))


def rebuild_arguments(attrs: Mapping[str, Any], weights: str | None = None) -> dict[str, Any]:
    """The :func:`load_backbone` keyword arguments that rebuild the backbone a feature file's
    attributes (``FeatureFile.attrs``, or a model card's ``extraction``) record: same family,
    weights, layer, pooling, image size, precision, preprocessing and top.

    ``weights`` overrides where the weights come from (a file given by the user); without it
    named weights are used by name and a weights file where extraction read it, if it is
    still there unchanged. Raises :class:`WeightsError` (one line) when the weights cannot be
    found, :class:`SettingsError` when the file's family is not registered.

    Examples
    --------
    >>> rebuild_arguments({"backbone": "vgg16", "weights": "hed-bsds500", "layer": "block5_pool",
    ...                    "pooling": "avg", "image_size": 224})["weights"]
    'hed-bsds500'
    """
    return attrs_family(attrs).rebuild_arguments(attrs, None if weights is None else str(weights))


def rebuild_backbone(attrs: Mapping[str, Any], weights: str | None = None, **changes: Any) -> LoadedBackbone:
    """The backbone a feature file's ``attrs`` record, built (:func:`rebuild_arguments`, then
    ``changes`` to its arguments, e.g. ``layers=[...]``), and checked to have the recorded
    weights (SHA-256) and, unless ``layers`` is changed, layer.

    Raises :class:`WeightsError` when the weights cannot be found or are not the recorded ones.

    Examples
    --------
    >>> from features import FeatureFile
    >>> with FeatureFile("f17.hdf5") as ff:  # doctest: +SKIP
    ...     loaded = rebuild_backbone(ff.attrs)
    """
    loaded = load_backbone(**{**rebuild_arguments(attrs, weights), **changes})
    other_layer = "layers" not in changes and loaded.layer != attrs.get("layer")
    if loaded.weights_sha256 != attrs.get("weights_sha256") or other_layer:
        raise WeightsError(
            f"the features came from {attrs.get('backbone')} {attrs.get('layer')} with weights "
            f"{attrs.get('weights')} (sha256 {str(attrs.get('weights_sha256'))[:12]}...), not "
            f"{loaded.layer} with {loaded.weights} (sha256 {loaded.weights_sha256[:12]}...): pass "
            "the weights (--weights) they came from"
        )
    return loaded
