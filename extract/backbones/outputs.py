"""From a built Keras model to the feature model: named layer outputs, each pooled by its rank.

A layer gives 4-D feature maps ``(batch, height, width, channels)``, 3-D token sequences
``(batch, tokens, width)`` or 2-D vectors ``(batch, width)``. Which poolings apply depends on
that rank alone, never on the model: :data:`POOLINGS_BY_OUTPUT`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import SettingsError
from .loaded import PRECISIONS

#: The poolings of each kind of layer output. ``flatten`` keeps every value (rows are the
#: output reshaped); ``avg`` and ``max`` pool over the positions (maps) or all the tokens;
#: ``cls`` takes the first token, a transformer's class token; ``mean`` averages the patch
#: tokens only (after the class and register tokens, which a family counts: one by default);
#: ``cls+mean`` is both, concatenated (DINOv2's linear-probe features).
POOLINGS_BY_OUTPUT: dict[str, tuple[str, ...]] = {
    "maps": ("flatten", "avg", "max"),
    "tokens": ("flatten", "avg", "max", "cls", "mean", "cls+mean"),
}

#: The rank (batch axis included) of each kind of output.
OUTPUT_RANKS = {"maps": 4, "tokens": 3}
_DESCRIBED = {"maps": "feature maps (4-D)", "tokens": "token sequences (3-D)"}

#: The poolings of feature maps: every ``keras.applications`` model's, and ``--pooling``'s
#: choices before token outputs existed.
POOLINGS = POOLINGS_BY_OUTPUT["maps"]


def poolings_of(outputs: Sequence[str]) -> tuple[str, ...]:
    """The poolings that apply to at least one of ``outputs`` (kinds of output), in order.

    Examples
    --------
    >>> poolings_of(["maps", "tokens"])
    ('flatten', 'avg', 'max', 'cls', 'mean', 'cls+mean')
    """
    return tuple(dict.fromkeys(p for kind in outputs for p in POOLINGS_BY_OUTPUT[kind]))


def pooled(out: Any, pooling: str, layer: str, prefix_tokens: int = 1) -> Any:
    """The symbolic output ``out`` of ``layer`` pooled as ``pooling`` says, by its rank: maps and
    token sequences are pooled, vectors (``fc2``, ``predictions``) are taken as they are.
    ``prefix_tokens``: how many tokens come before the patch tokens (a class token, registers),
    which ``mean`` leaves out.

    Raises :class:`SettingsError` for a pooling that does not apply to the layer's output.

    Examples
    --------
    >>> import keras
    >>> pooled(keras.Input((197, 768)), "cls", "encoder").shape
    (None, 768)
    >>> pooled(keras.Input((197, 768)), "cls+mean", "encoder").shape
    (None, 1536)
    """
    import keras

    rank = len(out.shape)
    if rank == 2:
        return out
    kind = next((k for k, r in OUTPUT_RANKS.items() if r == rank), None)
    if kind is None:
        if pooling == "flatten":
            return out
        raise SettingsError(f"pooling (--pooling) {pooling} does not apply to {layer}'s {rank}-D "
                            "outputs: choose flatten, or a layer of maps (4-D) or tokens (3-D)")
    if pooling not in POOLINGS_BY_OUTPUT[kind]:
        raise SettingsError(f"pooling (--pooling) {pooling} does not apply to layer {layer}, which "
                            f"gives {_DESCRIBED[kind]}: choose {', '.join(POOLINGS_BY_OUTPUT[kind])}")
    if pooling == "flatten":
        return out  # rows are the output reshaped (Running.rows)
    if pooling == "cls":
        return out[:, 0, :]
    if pooling in ("mean", "cls+mean"):
        return _patch_mean(out, pooling, prefix_tokens)
    pools = {
        "maps": {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D},
        "tokens": {"avg": keras.layers.GlobalAveragePooling1D, "max": keras.layers.GlobalMaxPooling1D},
    }
    return pools[kind][pooling](name=f"featurebank_{pooling}_{layer}")(out)


def _patch_mean(out: Any, pooling: str, prefix_tokens: int) -> Any:
    """``mean`` (of the patch tokens) or ``cls+mean`` of token sequences ``out``."""
    import keras

    # Summed in float32 whatever the compute precision: a bf16 sum of hundreds of tokens
    # would lose about log2(tokens) of its 8 bits.
    mean = keras.ops.mean(keras.ops.cast(out[:, prefix_tokens:, :], "float32"), axis=1)
    if pooling == "mean":
        return mean
    return keras.ops.concatenate([keras.ops.cast(out[:, 0, :], "float32"), mean], axis=-1)


def _layer_output(model: Any, name: str) -> Any:
    """The symbolic output of the layer or operation called ``name`` (ConvNeXt's last stage
    output is an ``Add`` operation, not a layer, so ``get_layer`` cannot find it)."""
    for op in model.operations:
        if op.name == name:
            return op.output
    raise SettingsError(
        f"{model.name} has no layer {name!r} (--layer); its last layers are "
        f"{', '.join(layer.name for layer in model.layers[-6:])}"
    )


def feature_model(model: Any, layers: Sequence[str], pooling: str, precision: str = "float32") -> Any:
    """A model from ``model``'s input to the outputs of ``layers`` (by name), each pooled by
    its rank (:func:`pooled`): what :attr:`LoadedBackbone.model` is.

    Examples
    --------
    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> conv = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> feature_model(keras.Model(inputs, conv), ["conv"], "avg").output_shape
    (None, 4)
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])  # pooling computes as the model does
    try:
        outputs = [pooled(_layer_output(model, name), pooling, name) for name in layers]
        return keras.Model(model.inputs, outputs if len(outputs) > 1 else outputs[0])
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _fresh_names() -> None:
    """Reset Keras' automatic layer names, keeping the user's dtype policy.

    Some entries' layers have only automatic names (MobileNetV3's last activation is
    ``activation_17`` in a fresh session, ``activation_35`` after another copy was built), so
    names are resolved as a fresh session gives them. Models built earlier stay usable.
    """
    import keras

    policy = keras.mixed_precision.global_policy()
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_global_policy(policy)


def _under_policy(build: Callable[..., Any], policy: str) -> Callable[..., Any]:
    """``build`` made to construct its layers under Keras dtype policy ``policy``."""

    def wrapped(**kwargs: Any) -> Any:
        import keras

        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            return build(**kwargs)
        finally:
            keras.mixed_precision.set_global_policy(previous)

    return wrapped
