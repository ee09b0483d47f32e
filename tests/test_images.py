"""Decoding: every odd kind of image file becomes RGB or is skipped with its reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from extract.images import ImageDecodeError, load_image

SIZE = (24, 32)  # height, width: not square, so a swapped axis would show


def _photo(h=40, w=50) -> np.ndarray:
    """A smooth RGB test picture (JPEG keeps it nearly intact)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 5, yy * 6, (xx + yy) * 2], axis=-1).clip(0, 255).astype(np.uint8)


def make_decode_matrix(folder):
    """Write one file of each odd kind; return {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    files = {}

    def save(name, img, **kw):
        files[name] = folder / name
        img.save(files[name], **kw)

    save("gray.jpg", Image.fromarray(photo[..., 0], mode="L"))
    alpha = np.broadcast_to(np.linspace(0, 255, photo.shape[1], dtype=np.uint8), photo.shape[:2])
    rgba = np.dstack([photo, alpha])
    save("rgba.png", Image.fromarray(rgba, mode="RGBA"))
    save("palette.png", Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
    save("cmyk.jpg", Image.fromarray(photo).convert("CMYK"), quality=95)
    wide = (np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) * 32).astype(np.uint16)
    save("gray16.png", Image.fromarray(wide))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=95)
    files["truncated.jpg"] = folder / "truncated.jpg"
    files["truncated.jpg"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["empty.jpg"] = folder / "empty.jpg"
    files["empty.jpg"].write_bytes(b"")
    files["text.jpg"] = folder / "text.jpg"
    files["text.jpg"].write_text("this is a note, not a picture\n")
    return files


GOOD = ("gray.jpg", "rgba.png", "palette.png", "cmyk.jpg", "gray16.png")
BAD = {
    "truncated.jpg": "truncated file",
    "empty.jpg": "empty file",
    "text.jpg": "not an image Pillow can identify",
}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    return make_decode_matrix(tmp_path_factory.mktemp("decode"))


def test_the_matrix_really_has_those_modes(matrix):
    modes = {name: Image.open(matrix[name]).mode for name in GOOD}
    assert modes["gray.jpg"] == "L"
    assert modes["rgba.png"] == "RGBA"
    assert modes["palette.png"] == "P"
    assert modes["cmyk.jpg"] == "CMYK"
    assert modes["gray16.png"].startswith("I")


@pytest.mark.parametrize("name", ["gray.jpg", "rgba.png", "palette.png", "cmyk.jpg"])
def test_converted_exactly_as_keras_load_img(matrix, name):
    import keras

    ours = load_image(matrix[name], SIZE)
    reference = keras.utils.img_to_array(keras.utils.load_img(matrix[name], target_size=SIZE))
    assert ours.shape == (*SIZE, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours.astype(np.float32), reference)


def test_grayscale_becomes_three_equal_channels(matrix):
    img = load_image(matrix["gray.jpg"], SIZE)
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def test_sixteen_bit_is_scaled_not_clipped(matrix):
    img = load_image(matrix["gray16.png"], (40, 50))
    wide = np.asarray(Image.open(matrix["gray16.png"]), dtype=np.float64)
    expected = np.rint(wide * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(img[..., 0], expected)
    # Pillow's own convert("RGB") would clip everything above 255 to white.
    assert (img < 255).mean() > 0.9


@pytest.mark.parametrize("name, reason", sorted(BAD.items()))
def test_undecodable_files_raise_with_a_reason(matrix, name, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(matrix[name], SIZE)


def test_resize_uses_the_named_filter(matrix):
    nearest = load_image(matrix["rgba.png"], SIZE, "nearest")
    bilinear = load_image(matrix["rgba.png"], SIZE, "bilinear")
    assert nearest.shape == bilinear.shape == (*SIZE, 3)
    assert not np.array_equal(nearest, bilinear)


def test_extract_writes_good_files_and_records_bad_ones(tmp_path):
    """The whole matrix through ``python -m extract``: 5 rows, 3 skipped with reasons."""
    from extract.__main__ import main
    from features import FeatureFile

    root = tmp_path / "odd"
    make_decode_matrix(root / "mixed")
    make_decode_matrix(root / "second")  # two classes, so labels mean something
    (root / "LICENSE.txt").write_text("not an image of any class")
    (root / "mixed" / "notes.txt").write_text("also ignored")
    out = tmp_path / "odd.hdf5"
    code = main(["--dataset", str(root), "--weights", "hed-bsds500", "--image-size", "32",
                 "--batch-size", "3", "--buffer-size", "4", "--output", str(out), "--quiet"])
    assert code == 0
    with FeatureFile(out) as ff:
        assert ff.n_rows == 10 and ff.dim == 512  # 1 x 1 x 512 at 32 x 32
        assert ff.label_names == ["mixed", "second"]
        assert ff.paths == [f"{c}/{n}" for c in ("mixed", "second") for n in sorted(GOOD)]
        assert list(ff.labels) == [0] * 5 + [1] * 5
        skipped = dict(ff.skipped)
        assert sorted(skipped) == sorted(f"{c}/{n}" for c in ("mixed", "second") for n in BAD)
        for path, reason in skipped.items():
            assert BAD[path.split("/")[1]] in reason
        assert np.isfinite(ff.load_features()).all()


def png_header(path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb's
    shape, without the bomb (its pixel data is a few bytes, so decoding it would fail)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(12_000, 10_000), (30_000, 30_000)])
def test_oversized_images_are_refused_from_the_header(tmp_path, width, height):
    # 120 Mpx is where Pillow only warns and would decode 120 MB; 900 Mpx is its hard error.
    # Refused as "too large" (not "truncated"), so nothing was decoded.
    path = tmp_path / "bomb.png"
    png_header(path, width, height)
    with pytest.raises(ImageDecodeError, match=f"too large: .*{width * height} pixels"):
        load_image(path, SIZE)


def test_max_pixels_sets_the_limit(matrix):
    with pytest.raises(ImageDecodeError, match="over the limit of 1999"):
        load_image(matrix["rgba.png"], SIZE, max_pixels=1999)  # 50 x 40 = 2000 pixels
    assert load_image(matrix["rgba.png"], SIZE, max_pixels=2000).shape == (*SIZE, 3)


def test_extract_skips_oversized_images(tmp_path):
    from extract.__main__ import main
    from features import FeatureFile

    root = tmp_path / "big"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.fromarray(_photo()).save(root / name / "photo.png")
    png_header(root / "a" / "bomb.png", 30_000, 30_000)
    Image.fromarray(_photo(80, 100)).save(root / "b" / "large.png")
    out = tmp_path / "big.hdf5"
    code = main(["--dataset", str(root), "--weights", "hed-bsds500", "--image-size", "32",
                 "--max-pixels", "5000", "--output", str(out), "--quiet"])
    assert code == 0
    with FeatureFile(out) as ff:
        assert ff.paths == ["a/photo.png", "b/photo.png"]
        skipped = dict(ff.skipped)
        assert sorted(skipped) == ["a/bomb.png", "b/large.png"]
        assert skipped["a/bomb.png"].startswith("too large: ")
        assert skipped["b/large.png"] == "too large: 100x80 = 8000 pixels, over the limit of 5000"
