"""Decoding one image file into the RGB array a backbone takes.

The result is what ``keras.utils.load_img(path, target_size=size)`` followed by
``keras.utils.img_to_array`` gives (same Pillow conversion to RGB, same resize filter, nearest
by default), with one correction: 16-bit grayscale images are scaled to 8 bits instead of being
clipped to white by Pillow's ``convert("RGB")``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

#: Resize filters by the names ``keras.utils.load_img`` uses.
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# Pillow modes of 16- (or 32-) bit integer grayscale: values go up to 65535, not 255.
_WIDE_GRAY = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


class ImageDecodeError(Exception):
    """The file is not a decodable image; the message is the reason recorded for it."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_GRAY:
        wide = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return img.convert("RGB")


#: Default pixel limit: Pillow's decompression-bomb threshold. Pillow itself only warns
#: between one and two times it and decodes anyway; here anything over it is skipped.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS


def load_image(
    path: str | os.PathLike,
    size: tuple[int, int],
    interpolation: str = "nearest",
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read an image file as a ``(height, width, 3)`` uint8 RGB array of the given size.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images become RGB. Raises
    :class:`ImageDecodeError` for anything that is not a complete, decodable image: an empty
    file, a file that is not an image, a truncated file, or one with more than ``max_pixels``
    pixels (default :data:`DEFAULT_MAX_PIXELS`). The size is read from the header, so an
    oversized image is refused before any of it is decoded into memory.
    """
    height, width = size
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with Image.open(path) as img:
            w, h = img.size
            if limit and w * h > limit:
                raise ImageDecodeError(f"too large: {w}x{h} = {w * h} pixels, over the limit of {limit}")
            img.load()  # decode now, so a truncated file fails here
            img = _to_rgb(img)
            if img.size != (width, height):
                img = img.resize((width, height), INTERPOLATIONS[interpolation])
            return np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too large: {exc}") from None
    except Image.UnidentifiedImageError:
        size_bytes = os.path.getsize(path)
        reason = "empty file" if size_bytes == 0 else "not an image Pillow can identify"
        raise ImageDecodeError(reason) from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt data as OSError (SyntaxError for some formats).
        kind = "truncated file" if "truncat" in str(exc).lower() else "cannot decode"
        raise ImageDecodeError(f"{kind}: {exc}") from None


def decode_or_reason(
    root: Path, rel: str, size: int, interpolation: str, max_pixels: int | None
) -> np.ndarray | str:
    """The image ``root / rel`` decoded as :func:`load_image` does at ``size`` x ``size``, or
    the reason it could not be (the text a feature file's ``skipped`` list records)."""
    try:
        return load_image(root / rel, (size, size), interpolation, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return str(exc)
    except OSError as exc:  # unreadable file: permissions, vanished since listing
        return f"cannot read: {exc.strerror or exc}"
