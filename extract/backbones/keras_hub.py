"""The keras_hub family: ``--backbone keras_hub:PRESET``, an image backbone of Keras' own
``keras_hub`` package (DINOv2, CLIP's vision encoder, SigLIP's vision encoder, ViT).

``PRESET`` is what ``keras_hub.models.Backbone.from_preset`` takes: a built-in preset name
(``keras_hub:dinov2_base``), a Kaggle or Hugging Face handle (``keras_hub:kaggle://...``,
``keras_hub:hf://...``), or a local preset directory (``keras_hub:/models/dinov2_base``), which
is how it runs offline. Weights come from the preset through keras_hub's own loaders
(``--weights`` left as it is, or ``--weights none`` for random weights); input size and
normalisation from the preset's image converter, whose ``x * scale + offset`` is the feature
model's first layer (so an exported model includes it).

Layers (``--layer``) are the encoder's token outputs by name; the default is the last one,
after the final layer norm:

=========  =====================================================  ===============================
family     token layers (first to last; default last)             other layers
=========  =====================================================  ===============================
DINOv2     ``embeddings``, ``stage1`` ... ``stageN``, ``layernorm``
CLIP       ``embedding``, ``pre_layer_norm``, ``encoder_block_0``  ``vision_projection``: the
           ... ``encoder_block_{N-1}``, ``layer_norm``             projected embedding
SigLIP     ``embedding``, ``encoder_block_0`` ...                  ``head``: the attention-pooled
           ``encoder_block_{N-1}``, ``post_layer_norm``            (MAP) embedding
ViT        ``vit_patching_and_embedding``, ``transformer_block_1``
           ... ``transformer_block_N``, ``vit_encoder``
=========  =====================================================  ===============================

Poolings of token layers: ``cls`` (the class token; CLIP's default layer gives the
representation its paper probed, before the projection), ``mean`` (the patch tokens only,
after the class and register tokens), ``cls+mean``, and ``flatten``/``avg``/``max``. SigLIP has
no class token: ``cls`` is refused on its token layers (its pooled embedding is ``--layer
head``). Vector layers are taken as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from .family import BackboneRequest, BaseBackboneFamily
from .loaded import PRECISIONS, Backbone, LoadedBackbone, Preprocess, WeightsError, sha256_file
from .outputs import _under_policy, pooled

#: What ``--backbone`` starts with for this family.
PREFIX = "keras_hub:"

#: What feature files record before the preset's name (see :func:`recorded_name`).
RECORDED_PREFIX = "keras_hub."

#: What feature files record as the weights of a preset (its own weights file).
PRESET_WEIGHTS = "preset"

#: What feature files record as the preprocessing: the converter's values are recorded apart
#: (``keras_hub_scale``, ``keras_hub_offset``), known only once the preset is read.
PREPROCESSING = "keras_hub image converter of the preset (in the model: x * scale + offset)"

_CONVERTER_FILE = "image_converter.json"
_WEIGHTS_FILE = "model.weights.h5"
_SHARDED_WEIGHTS_FILE = "model.weights.json"


@dataclass(frozen=True)
class HubPreset:
    """A preset the family knows: name, input side, token width, the projection's width
    (CLIP) and whether its token layers start with a class token (SigLIP's do not), for
    ``--list-backbones`` and the default pooling; ``published`` holds linear-probe accuracies
    from papers (not measured here)."""

    name: str
    architecture: str
    input_size: int | None
    width: int
    projection: int | None = None
    published: dict[str, float] = field(default_factory=dict)
    class_token: bool = True


def _presets() -> tuple[HubPreset, ...]:
    """The presets listed by ``--list-backbones`` (every keras_hub preset works by name)."""
    # Published linear probes: Oquab et al. 2023 (DINOv2 ViT-L/14), Radford et al. 2021,
    # Table 10 (CLIP ViT-L/14): Caltech-101, Flowers-102, Oxford-IIIT Pets.
    dino_probe = {"caltech101": 97.5, "flowers102": 99.7, "pets": 96.6}
    clip_probe = {"caltech101": 96.5, "flowers102": 99.2, "pets": 95.1}
    dino = [HubPreset(f"dinov2_{size}", "DINOv2", None, w, published=dino_probe if size == "large" else {})
            for size, w in (("small", 384), ("base", 768), ("large", 1024), ("giant", 1536))]
    clip = [HubPreset("clip_vit_base_patch32", "CLIP", 224, 768, 512),
            HubPreset("clip_vit_base_patch16", "CLIP", 224, 768, 512),
            HubPreset("clip_vit_large_patch14", "CLIP", 224, 1024, 768, published=clip_probe),
            HubPreset("clip_vit_large_patch14_336", "CLIP", 336, 1024, 768)]
    siglip = [HubPreset(name, "SigLIP", side, w, class_token=False) for name, side, w in
              (("siglip_base_patch16_224", 224, 768), ("siglip_large_patch16_384", 384, 1024),
               ("siglip_so400m_patch14_224", 224, 1152), ("siglip_so400m_patch14_384", 384, 1152))]
    vit = [HubPreset(f"vit_{size}_patch16_{side}_imagenet", "ViT", side, w) for size, w in
           (("base", 768), ("large", 1024)) for side in (224, 384)]
    return (*dino, *clip, *siglip, *vit)


#: The presets ``--list-backbones`` shows (see :class:`HubPreset`).
HUB_PRESETS: tuple[HubPreset, ...] = _presets()


def preset_of(backbone: str) -> str:
    """The preset a ``--backbone keras_hub:PRESET`` names (a local directory made absolute, so
    that predict finds it from anywhere).

    Examples
    --------
    >>> preset_of("keras_hub:dinov2_base"), preset_of("keras_hub:kaggle://keras/vit/keras/x/1")
    ('dinov2_base', 'kaggle://keras/vit/keras/x/1')
    """
    preset = backbone[len(PREFIX if backbone.startswith(PREFIX) else RECORDED_PREFIX):]
    if not is_local(preset):
        return preset
    return str(Path(preset).expanduser().resolve())


def recorded_name(preset: str) -> str:
    """What feature files record as the backbone of ``preset``: ``keras_hub.`` and its name (a
    directory's name, a handle without its scheme and slashes): an exported model is named after
    it, and Keras and TensorFlow refuse ``/`` and ``:`` there. The preset itself is found again
    from ``weights_path``.

    Examples
    --------
    >>> recorded_name("dinov2_base"), recorded_name("hf://org/dinov2"), recorded_name("/m/clip_l14")
    ('keras_hub.dinov2_base', 'keras_hub.org_dinov2', 'keras_hub.clip_l14')
    """
    if "://" in preset:
        name = preset.split("://", 1)[1].strip("/").replace("/", "_")
    else:
        name = Path(preset).name if is_local(preset) else preset
    return RECORDED_PREFIX + name


def is_local(preset: str) -> bool:
    """True for a local preset directory: not a handle (``scheme://``), and a path that exists,
    or one written as a path (a separator, or a leading ``.`` or ``~``). Decided without
    importing keras_hub, which the settings' checks run before TensorFlow's start-up lines
    are hidden.

    Examples
    --------
    >>> is_local("dinov2_base"), is_local("hf://google/x"), is_local("./mine")
    (False, False, True)
    """
    if "://" in preset:
        return False
    return (os.path.exists(os.path.expanduser(preset)) or os.sep in preset or "/" in preset
            or preset.startswith((".", "~")))


def _handle(preset: str) -> str:
    """Where keras_hub takes ``preset`` from: its Kaggle handle with version, the handle given,
    or the local directory."""
    from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

    return str(BUILTIN_PRESETS.get(preset, {}).get("kaggle_handle", preset))


def _local_json(preset: str, name: str) -> dict[str, Any] | None:
    """A preset directory's JSON file, read without keras_hub; None for a preset not local."""
    if not is_local(preset):
        return None
    path = Path(preset) / name
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def preset_weights_sha256(directory: str | os.PathLike) -> str:
    """The SHA-256 of a preset directory's weights: of ``model.weights.h5``, or for sharded
    weights of their index and every shard's SHA-256 in the index's order.

    Examples
    --------
    >>> preset_weights_sha256("presets/dinov2_base")  # doctest: +SKIP
    '3f1c...'
    """
    directory = Path(directory)
    if (directory / _WEIGHTS_FILE).is_file():
        return sha256_file(directory / _WEIGHTS_FILE)
    index = directory / _SHARDED_WEIGHTS_FILE
    if not index.is_file():
        raise WeightsError(f"{directory}: no {_WEIGHTS_FILE} in the preset directory; save it with "
                           "backbone.save_to_preset(DIR)")
    shards = sorted({f for v in json.loads(index.read_text())["weight_map"].values()
                     for f in (v if isinstance(v, list) else [v])})
    digest = hashlib.sha256(sha256_file(index).encode())
    for shard in shards:
        digest.update(sha256_file(directory / shard).encode())
    return digest.hexdigest()


def _not_had(preset: str, exc: BaseException) -> WeightsError:
    """The one-line error for a preset that cannot be had."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if is_local(preset) and not Path(preset).is_dir():
        first = "no such directory"  # keras_hub's own message lists every built-in preset
    if is_local(preset):
        return WeightsError(
            f"keras_hub preset directory {preset} cannot be read ({first}); make one with "
            "backbone.save_to_preset(DIR) and image_converter.save_to_preset(DIR)")
    return WeightsError(
        f"could not get keras_hub preset {preset} from {_handle(preset)} ({first}); offline, download it "
        f"where there is internet (keras_hub.models.Backbone.from_preset({preset!r}).save_to_preset(DIR), "
        "and keras_hub.layers.ImageConverter likewise) and pass --backbone keras_hub:DIR")


#: The default (last) token layer of each known backbone class, by its name in ``config.json``.
DEFAULT_LAYERS = {"DINOV2Backbone": "layernorm", "CLIPBackbone": "layer_norm",
                  "CLIPVisionEncoder": "layer_norm", "SigLIPBackbone": "post_layer_norm",
                  "SigLIPVisionEncoder": "post_layer_norm", "ViTBackbone": "vit_encoder"}


#: The backbone classes (``config.json``'s ``class_name``) whose token layers start with a
#: class token (ViT's unless its config says ``use_class_token: false``).
_CLASS_TOKEN_CLASSES = ("DINOV2Backbone", "CLIPBackbone", "CLIPVisionEncoder", "ViTBackbone")


@dataclass(frozen=True)
class Taps:
    """The named outputs of a keras_hub backbone, all computed from one image input."""

    images: Any  # the symbolic image input they are computed from
    layers: dict[str, Any]  # name -> symbolic output (tokens, or vectors)
    default: str
    prefix_tokens: int  # class and register tokens before the patch tokens
    class_token: bool
    architecture: str
    #: A layer that is the whole backbone's output, and that backbone: used as one layer where
    #: it alone is asked, because keras_hub saves it from its own config (ViT's embedding layer
    #: saved alone does not load back: its config has keys its constructor refuses).
    whole: tuple[str, Any] | None = None


def _encoder_layers(encoder: Any, skip: str = "images") -> dict[str, Any]:
    """An encoder's operations by name, less the encoder's own name prefix (a preset saved
    with a named encoder prefixes every layer: ``clip_vision_encoder_encoder_block_0``)."""
    prefix = f"{encoder.name}_"
    return {op.name.removeprefix(prefix): op.output for op in encoder.operations if op.name != skip}


def backbone_taps(hub: Any) -> Taps:
    """The named outputs of keras_hub backbone ``hub`` (see the module's table); for another
    kind of backbone, the operations of its graph (no class token assumed).

    Examples
    --------
    >>> backbone_taps(keras_hub.models.Backbone.from_preset(DIR)).default  # doctest: +SKIP
    'layernorm'
    """
    from keras_hub import models

    if isinstance(hub, models.DINOV2Backbone):
        pyramid = dict(hub.pyramid_outputs)
        layers = {"embeddings": pyramid.pop("stem"), **pyramid, "layernorm": hub.outputs[0]}
        return Taps(hub.inputs[0], layers, "layernorm", 1 + hub.num_register_tokens, True, "DINOv2")
    if isinstance(hub, (models.CLIPBackbone, models.CLIPVisionEncoder)):
        encoder = getattr(hub, "vision_encoder", hub)
        layers = _encoder_layers(encoder)
        if encoder is not hub:  # the projected embedding of the class token, as CLIP computes it
            layers["vision_projection"] = hub.vision_projection(hub.vision_pooler(layers["layer_norm"]))
        return Taps(encoder.inputs[0], layers, "layer_norm", 1, True, "CLIP")
    if isinstance(hub, (models.SigLIPBackbone, models.SigLIPVisionEncoder)):
        encoder = getattr(hub, "vision_encoder", hub)
        return Taps(encoder.inputs[0], _encoder_layers(encoder), "post_layer_norm", 0, False, "SigLIP")
    if isinstance(hub, models.ViTBackbone):
        return _vit_taps(hub)
    layers = _encoder_layers(hub)
    return Taps(hub.inputs[0], layers, list(layers)[-1], 0, False, type(hub).__name__)


def _vit_taps(hub: Any) -> Taps:
    """ViT's blocks run inside one ``ViTEncoder`` layer: the same blocks (same weights) are
    called again here, from the embedding, so that each block's output has a name."""
    embedding = hub.get_layer("vit_patching_and_embedding").output
    encoder = hub.get_layer("vit_encoder")
    layers = {"vit_patching_and_embedding": embedding}
    x = encoder.dropout(embedding)
    for block in encoder.encoder_layers:
        x = block(x)
        layers[block.name] = x
    layers["vit_encoder"] = hub.outputs[0]  # keras_hub's own graph: the blocks, then its norm
    prefix = 1 if hub.use_class_token else 0
    return Taps(hub.inputs[0], layers, "vit_encoder", prefix, bool(hub.use_class_token), "ViT",
                whole=("vit_encoder", hub))


def _converter_values(converter: Any) -> tuple[int, Any, Any, dict[str, Any]]:
    """An image converter's side, scale, offset and what provenance records of it."""
    size = converter.image_size
    if size is None or size[0] != size[1]:
        raise WeightsError(f"the preset's image converter gives {size} images; featurebank needs a "
                           "square size (image_converter.json: image_size)")
    scale = 1.0 if converter.scale is None else converter.scale
    offset = 0.0 if converter.offset is None else converter.offset
    facts = {"keras_hub_scale": json.dumps(scale), "keras_hub_offset": json.dumps(offset),
             "keras_hub_interpolation": str(converter.interpolation),
             "keras_hub_crop_to_aspect_ratio": bool(converter.crop_to_aspect_ratio)}
    return int(size[0]), scale, offset, facts


def hub_feature_model(taps: Taps, layers: tuple[str, ...], pooling: str, precision: str, size: int,
                      scale: Any, offset: Any) -> Any:
    """The feature model: images in [0, 255], the converter's ``x * scale + offset`` (float32),
    the backbone to the outputs of ``layers``, each pooled by its rank.

    Examples
    --------
    >>> hub_feature_model(taps, ("layernorm",), "cls", "float32", 224, 1 / 255, 0.0)  # doctest: +SKIP
    """
    import keras

    missing = [name for name in layers if name not in taps.layers]
    if missing:
        raise SettingsError(f"{taps.architecture} has no layer {missing[0]!r} (--layer); its layers are "
                            f"{', '.join(taps.layers)}")
    tokens = [name for name in layers if len(taps.layers[name].shape) == 3]
    if pooling in ("cls", "cls+mean") and tokens and not taps.class_token:
        raise SettingsError(f"pooling (--pooling) {pooling} needs a class token, which {taps.architecture}'s "
                            f"{tokens[0]} has not: choose mean, or --layer head (SigLIP's pooled embedding)")
    if taps.whole is not None and layers == (taps.whole[0],):
        inner = taps.whole[1]
    else:
        inner = keras.Model(taps.images, [taps.layers[name] for name in layers])
    images = keras.Input((size, size, 3), name="images")
    # float32 whatever the precision, as keras_hub's converter computes it.
    x = keras.layers.Rescaling(scale, offset, dtype="float32", name="keras_hub_image_converter")(images)
    outs = inner(x)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]

    def pool() -> list[Any]:
        return [pooled(out, pooling, name, taps.prefix_tokens)
                for out, name in zip(outs, layers, strict=True)]

    outputs = _under_policy(pool, PRECISIONS[precision])()
    return keras.Model(images, outputs if len(outputs) > 1 else outputs[0])


def _check_size(request: BackboneRequest, size: int | None) -> None:
    """Refuse an ``--image-size`` other than the image converter's ``size`` (None: not known yet)."""
    if request.image_size is not None and size is not None and request.image_size != size:
        raise SettingsError(f"image_size (--image-size) {request.image_size}: {request.name} takes "
                            f"{size}x{size} images (its image converter); leave it out")


def _identity(images: Any) -> Any:
    """The preprocessing outside the model: none (the converter is the model's first layer)."""
    return images


@dataclass(frozen=True)
class HubBackbone(Backbone):
    """A :class:`Backbone` with what feature files record of its keras_hub preset."""

    facts: tuple[tuple[str, Any], ...] = ()


class KerasHubFamily(BaseBackboneFamily):
    """``--backbone keras_hub:PRESET``: a keras_hub image backbone with its preset's weights and
    image converter (see the module's docstring).

    Examples
    --------
    >>> family = KerasHubFamily()
    >>> family.claims("keras_hub:dinov2_base", "imagenet"), family.claims("vgg16", "imagenet")
    (True, False)
    >>> family.weights_identity(BackboneRequest("keras_hub:dinov2_base", None))
    ('none', 'none')
    """

    name = "keras-hub"
    outputs = ("maps", "tokens")
    named_weights = (PRESET_WEIGHTS,)
    #: Why ``classify --model finetune`` refuses these files (one line).
    finetune_refusal = ("fine-tuning starts from a stored map of a keras.applications CNN; a keras_hub "
                        "backbone's blocks are not rebuilt from stored tokens here: train a head "
                        "(--model head) or logreg on its features")

    def claims(self, backbone: str, weights: str | None) -> bool:
        # The recorded name too (a file whose family is not recorded), not a saved model's file.
        backbone = str(backbone)
        return backbone.startswith(PREFIX) or (backbone.startswith(RECORDED_PREFIX)
                                               and not backbone.endswith(".keras"))

    def check_settings(self, request: BackboneRequest) -> None:
        """The common checks, a preset named, weights from the preset, its own input size."""
        super().check_settings(request)
        if not request.name.startswith(PREFIX) or not request.name[len(PREFIX):]:
            raise SettingsError("--backbone keras_hub:PRESET needs a preset: a name (keras_hub:dinov2_base), "
                                "a kaggle:// or hf:// handle, or a local preset directory")
        if request.weights not in (None, "imagenet", PRESET_WEIGHTS):
            raise SettingsError(f"weights (--weights) {request.weights}: a keras_hub backbone takes its "
                                "weights from its preset; leave --weights out (none: random weights)")
        _check_size(request, self._converter_size(preset_of(request.name)))

    def default_interpolation(self, backbone: str, weights: str | None) -> str:
        """The preset's image converter's resize filter (keras_hub's default, bilinear, for a
        preset that is not a local directory)."""
        converter = _local_json(preset_of(backbone), _CONVERTER_FILE) or {}
        return str(converter.get("config", {}).get("interpolation", "bilinear"))

    def default_pooling(self, backbone: str, weights: str | None) -> str:
        """``cls`` where the preset's token layers start with a class token (CLIP's default
        then gives the representation its paper probed, before the projection), ``mean``
        where they have none (SigLIP), decided without building the model: from a local
        directory's ``config.json``, else from the listed preset a name or handle names;
        ``mean`` for a preset neither says, as every token layer takes it."""
        preset = preset_of(backbone)
        config = _local_json(preset, "config.json")
        if config is not None:
            known = config.get("class_name") in _CLASS_TOKEN_CLASSES
            return "cls" if known and config.get("config", {}).get("use_class_token", True) else "mean"
        listed = {p.name: p for p in HUB_PRESETS}
        names = [part for part in preset.split("://", 1)[-1].split("/") if part in listed]
        if names:
            return "cls" if listed[names[0]].class_token else "mean"
        return "mean"

    def _converter_size(self, preset: str) -> int | None:
        converter = _local_json(preset, _CONVERTER_FILE)
        size = (converter or {}).get("config", {}).get("image_size")
        return int(size[0]) if size else None

    def preprocess_input(self, request: BackboneRequest) -> Preprocess:
        return _identity

    def planned_attrs(self, request: BackboneRequest) -> dict[str, Any]:
        preset = preset_of(request.name)
        config = _local_json(preset, "config.json") or {}
        return {
            "backbone": recorded_name(preset),
            "layer": request.layers[0] if request.layers else DEFAULT_LAYERS.get(config.get("class_name")),
            "image_size": request.image_size or self._converter_size(preset),
            "preprocessing": PREPROCESSING,
        }

    def weights_identity(self, request: BackboneRequest) -> tuple[str, str | None]:
        if request.weights is None:
            return "none", "none"
        preset = preset_of(request.name)
        if not is_local(preset) or not Path(preset).is_dir():
            return PRESET_WEIGHTS, None  # known once keras_hub has the preset
        try:
            return PRESET_WEIGHTS, preset_weights_sha256(preset)
        except WeightsError:
            return PRESET_WEIGHTS, None

    def build(self, request: BackboneRequest) -> LoadedBackbone:
        """Load the preset's backbone (under the precision's dtype policy) and image converter
        through keras_hub, then cut it at the layers asked."""
        preset = preset_of(request.name)
        precision = request.precision or "float32"
        hub, converter = _under_policy(_load_preset, PRECISIONS[precision])(
            preset=preset, load_weights=request.weights is not None)
        size, scale, offset, facts = _converter_values(converter)
        _check_size(request, size)
        taps = backbone_taps(hub)
        layers = tuple(request.layers or (taps.default,))
        model = hub_feature_model(taps, layers, request.pooling, precision, size, scale, offset)
        # Where the weights were read (for a named preset, keras_hub's download: a complete
        # preset directory), so that predict rebuilds from it, offline too; without weights,
        # the preset itself (a directory, name or handle), which rebuild reads from here.
        sha, where = "none", preset
        if request.weights is not None:
            where = str(Path(_weights_file(preset)).resolve())
            sha = preset_weights_sha256(Path(where).parent)
        import keras_hub

        facts.update(keras_hub_preset=preset, keras_hub_handle=_handle(preset),
                     keras_hub_class=type(hub).__name__, keras_hub_version=keras_hub.__version__,
                     keras_hub_prefix_tokens=taps.prefix_tokens)
        backbone = HubBackbone(name=recorded_name(preset), input_size=size, min_size=size,
                               preprocessing=PREPROCESSING, preprocess_in_model=True,
                               feature_layer=taps.default, preprocess=_identity, facts=tuple(facts.items()))
        return LoadedBackbone(
            backbone=backbone, model=model, weights=PRESET_WEIGHTS if request.weights is not None else "none",
            weights_sha256=sha, layers=layers, pooling=request.pooling, image_size=size, precision=precision,
            weights_path=where,
        )

    def provenance(self, loaded: LoadedBackbone, index: int = 0) -> dict[str, Any]:
        """The standard provenance, and the preset's: name, handle, class, keras_hub version,
        the converter's scale, offset, interpolation and cropping, and the prefix tokens."""
        return {**super().provenance(loaded, index), **dict(getattr(loaded.backbone, "facts", ()))}

    def rebuild_arguments(self, attrs: Mapping[str, Any], weights: str | None = None) -> dict[str, Any]:
        """The recorded preset (its weights, or random ones): the directory its weights were
        read from (``weights_path``), else the preset by name; ``weights``, where given, is
        the preset directory (or its weights file) to read instead."""
        arguments = super().rebuild_arguments(attrs)
        where = weights if weights is not None else attrs.get("weights_path") or attrs.get("keras_hub_preset")
        if where:  # a handle is no path (Path would fold its "//")
            preset = str(Path(where).parent) if is_local(where) and Path(where).is_file() else str(where)
        else:
            preset = str(attrs["backbone"])[len(RECORDED_PREFIX):]
        if is_local(preset) and not Path(preset).is_dir():
            raise WeightsError(f"the features came from keras_hub preset {preset}, which is no longer "
                               "there (moved or deleted); pass --weights DIR of that preset")
        return {**arguments, "name": PREFIX + preset}

    def rebuild_weights(self, attrs: Mapping[str, Any], weights: str | None = None) -> str | None:
        return None if attrs.get("weights") in (None, "none") else PRESET_WEIGHTS


def _load_preset(preset: str, load_weights: bool) -> tuple[Any, Any]:
    """keras_hub's backbone and image converter of ``preset``; :class:`WeightsError` (one line)
    where they cannot be had. DINOv2 is built at its converter's size (keras_hub interpolates
    its position embeddings), the others at their own."""
    from keras_hub import layers, models
    from keras_hub.src.utils.preset_utils import load_json

    try:
        converter = layers.ImageConverter.from_preset(preset)
        size = converter.image_size
        kwargs = {}
        if load_json(preset).get("class_name") == "DINOV2Backbone" and size is not None:
            kwargs["image_shape"] = (int(size[0]), int(size[1]), 3)
        hub = models.Backbone.from_preset(preset, load_weights=load_weights, **kwargs)
    except Exception as exc:  # keras_hub raises OSError, ValueError, FileNotFoundError, requests' errors
        raise _not_had(preset, exc) from None
    return hub, converter


def _weights_file(preset: str) -> str:
    """The local weights file (or sharded index) of ``preset``, which keras_hub has just read."""
    from keras_hub.src.utils.preset_utils import check_file_exists, get_file

    try:
        name = _WEIGHTS_FILE if check_file_exists(preset, _WEIGHTS_FILE) else _SHARDED_WEIGHTS_FILE
        return str(get_file(preset, name))
    except Exception as exc:  # as in _load_preset
        raise _not_had(preset, exc) from None
