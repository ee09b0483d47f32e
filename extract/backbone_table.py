"""The table ``python -m extract --list-backbones`` prints, made from the registry."""

from __future__ import annotations

from .backbones import BACKBONES, _keras_cache


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
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
