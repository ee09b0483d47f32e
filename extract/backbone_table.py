"""The tables ``python -m extract --list-backbones`` prints, made from the registry: the
``keras.applications`` models, then (after a blank line) the keras_hub presets it knows."""

from __future__ import annotations

from .backbones import BACKBONES, _keras_cache
from .backbones.keras_hub import HUB_PRESETS


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f}M"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def backbone_table() -> str:
    """One row per backbone: name, input size (native and smallest), feature length flattened and
    pooled at the native size, default feature layer, parameters (with the top), ImageNet
    top-1 / top-5 as Keras' applications table gives them, and whether Keras' cache
    (``~/.keras/models``, or ``$KERAS_HOME/models``) holds its ImageNet weights without / with
    the top.

    Examples
    --------
    >>> print(backbone_table().splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
    backbone  input (min)  flatten  avg  feature layer  params  top-1  top-5  imagenet cached
    """
    cache = _keras_cache()
    header = ("backbone", "input (min)", "flatten", "avg", "feature layer", "params", "top-1", "top-5",
              "imagenet cached")
    rows = [header]
    for b in BACKBONES.values():
        cached = ("notop" if (cache / b.imagenet_file).is_file() else "",
                  "top" if (cache / b.imagenet_top_file).is_file() else "")
        rows.append((
            b.name, f"{b.input_size} ({b.min_size})", f"{b.flatten_dim:,}", f"{b.avg_dim:,}",
            b.feature_layer, _millions(b.params), _share(b.top1), _share(b.top5),
            " + ".join(c for c in cached if c) or "no",
        ))
    return _aligned(rows) + "\n\n" + hub_table()


def _aligned(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def hub_table() -> str:
    """The keras_hub presets the ``keras-hub`` family lists (any other preset, handle or local
    preset directory works too): ``--backbone``, architecture, input side (``converter's``: its
    image converter says), feature length with ``--pooling cls`` or ``mean`` (the token width)
    and ``cls+mean`` (``-`` without a class token, as SigLIP), CLIP's
    projected embedding, and linear-probe accuracies (Caltech-101 / Flowers-102 / Pets)
    published by the model's authors, not measured here.

    Examples
    --------
    >>> print(hub_table().splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
    keras_hub backbone  architecture  input  width  cls+mean  projection
    published linear probe (C101/F102/Pets)
    """
    rows = [("keras_hub backbone", "architecture", "input", "width", "cls+mean", "projection",
             "published linear probe (C101/F102/Pets)")]
    for p in HUB_PRESETS:
        probe = "/".join(f"{p.published[k]:.1f}" for k in ("caltech101", "flowers102", "pets")
                         if p.published) or "-"
        rows.append((f"keras_hub:{p.name}", p.architecture, str(p.input_size or "converter's"),
                     str(p.width), str(2 * p.width) if p.class_token else "-",
                     str(p.projection or "-"), probe))
    return _aligned(rows)
