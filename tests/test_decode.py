"""Tests for clipsearch.base.images on real files written by each test (no mocks)."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zlib
from dataclasses import FrozenInstanceError
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from clipsearch.base.images import DEFAULT_MAX_PIXELS, DecodeError, ImageInfo, load_image, to_rgb

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
COLOUR = (200, 60, 30)


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 2) -> None:
    assert len(actual) == len(expected), (actual, expected)
    assert all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True)), (
        actual,
        expected,
    )


def pixel(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def two_halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    img = Image.new("RGB", (width, height), RED)
    img.paste(BLUE, (width // 2, 0, width, height))
    return img


def decode_error(path: Path, **kwargs: int) -> DecodeError:
    with pytest.raises(DecodeError) as excinfo:
        load_image(path, **kwargs)
    return excinfo.value


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose IHDR claims width x height: decoding it could never succeed."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    # signature (8) | IHDR length (4) | b"IHDR" (4) | width, height ... (13) | CRC (4)
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def avif_readable() -> bool:
    try:
        return bool(features.check_module("avif"))
    except ValueError:
        return False


# --- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "save_kwargs", "fmt", "tol"),
    [
        ("a.jpg", {"quality": 95}, "JPEG", 4),
        ("a.png", {}, "PNG", 0),
        ("a.gif", {}, "GIF", 0),
        ("a.bmp", {}, "BMP", 0),
        ("a.tif", {}, "TIFF", 0),
        ("a.webp", {"lossless": True}, "WEBP", 0),
        ("lossy.webp", {"quality": 90}, "WEBP", 8),
    ],
)
def test_formats_decode_to_rgb(
    tmp_path: Path, name: str, save_kwargs: dict[str, object], fmt: str, tol: int
) -> None:
    path = tmp_path / name
    Image.new("RGB", (48, 32), COLOUR).save(path, **save_kwargs)
    img, info = load_image(path)
    assert img.mode == "RGB"
    assert img.size == (48, 32)
    assert info == ImageInfo(width=48, height=32, format=fmt, taken_at=None)
    assert_close(pixel(img, (24, 16)), COLOUR, tol)


def test_pathlike_and_str_paths(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4), COLOUR).save(path)
    assert pixel(load_image(str(path))[0]) == COLOUR
    assert pixel(load_image(path)[0]) == COLOUR


@pytest.mark.parametrize("name", ["фото 1.jpg", "写真 猫.png", "with space.webp"])
def test_unicode_and_space_file_names(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    Image.new("RGB", (16, 8), COLOUR).save(path, quality=95)
    img, info = load_image(path)
    assert (info.width, info.height) == (16, 8)
    assert_close(pixel(img), COLOUR, 4)


# --- animations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "save_kwargs"),
    [
        ("anim.gif", {"duration": 50, "loop": 0}),
        ("anim.png", {"duration": 50}),
        ("anim.webp", {"duration": 50, "lossless": True}),
    ],
)
def test_animation_yields_first_frame(
    tmp_path: Path, name: str, save_kwargs: dict[str, object]
) -> None:
    frames = [Image.new("RGB", (20, 10), c) for c in (RED, (0, 255, 0), BLUE)]
    path = tmp_path / name
    frames[0].save(path, save_all=True, append_images=frames[1:], **save_kwargs)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 3  # really animated
    img, info = load_image(path)
    assert img.mode == "RGB"
    assert (img.size, (info.width, info.height)) == ((20, 10), (20, 10))
    assert pixel(img, (10, 5)) == RED
    # The file is closed by now; the returned image must still be usable on its own.
    assert pixel(img.resize((4, 2)), (1, 1)) == RED


def test_gif_transparent_first_frame_is_white(tmp_path: Path) -> None:
    frame = Image.new("P", (8, 8), 1)
    frame.putpalette([0, 0, 0, *RED] + [0, 0, 0] * 254)
    frame.paste(0, (0, 0, 4, 8))
    path = tmp_path / "t.gif"
    frame.save(path, transparency=0)
    img, _ = load_image(path)
    assert pixel(img, (1, 1)) == WHITE
    assert pixel(img, (6, 1)) == RED


# --- modes via to_rgb ---------------------------------------------------------------------------


def _palette_image(transparency: int | None) -> Image.Image:
    img = Image.new("P", (2, 1))
    img.putpalette([*RED, 10, 20, 30] + [0, 0, 0] * 254)
    img.putpixel((1, 0), 1)
    if transparency is not None:
        img.info["transparency"] = transparency
    return img


def _rgba(*pixels: tuple[int, int, int, int]) -> Image.Image:
    return Image.fromarray(np.array([pixels], dtype=np.uint8))


def _la(*pixels: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.array([pixels], dtype=np.uint8))


def _from_array(values: list[int] | list[float], dtype: str) -> Image.Image:
    return Image.fromarray(np.array([values], dtype=dtype))


def grey(value: int) -> tuple[int, int, int]:
    return (value, value, value)


HALF_RED = (255, 128, 128)  # red at alpha 128 over white
MODE_CASES: list[tuple[str, Image.Image, list[tuple[int, int, int]]]] = [
    ("L", Image.new("L", (1, 1), 77), [grey(77)]),
    ("1", Image.frombytes("1", (2, 1), bytes([0b10000000])), [WHITE, grey(0)]),
    ("P", _palette_image(None), [RED, (10, 20, 30)]),
    ("P+transparency", _palette_image(0), [WHITE, (10, 20, 30)]),
    ("RGBA", _rgba((255, 0, 0, 0), (255, 0, 0, 128), (0, 0, 255, 255)), [WHITE, HALF_RED, BLUE]),
    ("RGBa", _rgba((255, 0, 0, 0), (255, 0, 0, 128)).convert("RGBa"), [WHITE, HALF_RED]),
    ("LA", _la((100, 0), (100, 255)), [WHITE, grey(100)]),
    ("La", _la((100, 0), (100, 255)).convert("La"), [WHITE, grey(100)]),
    ("PA", _palette_image(None).convert("PA"), [RED, (10, 20, 30)]),
    ("CMYK", Image.new("CMYK", (1, 1), (0, 255, 255, 0)), [RED]),
    ("YCbCr", Image.new("RGB", (1, 1), COLOUR).convert("YCbCr"), [COLOUR]),
    ("HSV", Image.new("RGB", (1, 1), RED).convert("HSV"), [RED]),
    ("LAB", Image.new("LAB", (1, 1), (255, 128, 128)), [WHITE]),
    ("I;16", _from_array([0, 32768, 65535], "uint16"), [grey(0), grey(128), WHITE]),
    (
        "I;16B",
        Image.frombytes("I;16B", (2, 1), struct.pack(">HH", 32768, 65535)),
        [grey(128), WHITE],
    ),
    (
        "I;16L",
        Image.frombytes("I;16L", (2, 1), struct.pack("<HH", 32768, 65535)),
        [grey(128), WHITE],
    ),
    ("I 16-bit content", _from_array([0, 32768, 65535], "int32"), [grey(0), grey(128), WHITE]),
    ("I full range", _from_array([-(2**31), 0, 2**31 - 1], "int32"), [grey(0), grey(128), WHITE]),
    ("F 0..1", _from_array([0.0, 0.5, 1.0], "float32"), [grey(0), grey(128), WHITE]),
    ("F 0..255", _from_array([0.0, 100.0, 200.0], "float32"), [grey(0), grey(100), grey(200)]),
    ("F 0..65535", _from_array([0.0, 32768.0, 65535.0], "float32"), [grey(0), grey(128), WHITE]),
]


@pytest.mark.parametrize(("label", "image", "expected"), MODE_CASES, ids=[c[0] for c in MODE_CASES])
def test_to_rgb_modes(label: str, image: Image.Image, expected: list[tuple[int, int, int]]) -> None:
    assert image.mode == label.split()[0].split("+")[0]
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.size == image.size
    for x, want in enumerate(expected):
        assert_close(pixel(rgb, (x, 0)), want)


def test_to_rgb_passes_rgb_through() -> None:
    img = Image.new("RGB", (3, 3), COLOUR)
    assert to_rgb(img) is img


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    # A mid-grey 16-bit photo must stay mid-grey, not saturate to white.
    rng = np.random.default_rng(1)
    values = rng.integers(1000, 64000, (16, 16), dtype=np.uint16)
    out = np.asarray(to_rgb(Image.fromarray(values)))[..., 0].astype(int)
    assert np.abs(out - values.astype(int) / 257).max() <= 1


# --- modes via real files -----------------------------------------------------------------------


def _write(path: Path, image: Image.Image, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


FILE_MODE_CASES: list[tuple[str, Image.Image, str, tuple[int, int, int], int]] = [
    ("gray16.png", _from_array([32768, 32768], "uint16"), "I;16", grey(128), 0),
    ("gray16.tif", _from_array([32768, 65535], "uint16"), "I;16", grey(128), 0),
    ("int32.tif", _from_array([32768, 65535], "int32"), "I", grey(128), 0),
    ("float.tif", _from_array([0.5, 1.0], "float32"), "F", grey(128), 0),
    ("gray.png", Image.new("L", (2, 1), 77), "L", grey(77), 0),
    ("gray.jpg", Image.new("L", (2, 1), 77), "L", grey(77), 2),
    ("bilevel.png", Image.new("1", (2, 1), 1), "1", WHITE, 0),
    ("bilevel.tif", Image.new("1", (2, 1), 1), "1", WHITE, 0),
    ("palette.png", _palette_image(None), "P", RED, 0),
    ("palette_trns.png", _palette_image(0), "P", WHITE, 0),
    ("rgba.png", _rgba((255, 0, 0, 0), (255, 0, 0, 128)), "RGBA", WHITE, 0),
    ("half.png", _rgba((255, 0, 0, 128), (0, 0, 0, 0)), "RGBA", HALF_RED, 2),
    ("rgba.webp", _rgba((255, 0, 0, 0), (255, 0, 0, 255)), "RGBA", WHITE, 0),
    ("la.png", _la((0, 0), (0, 0)), "LA", WHITE, 0),
    ("cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "CMYK", RED, 4),
    ("cmyk.tif", Image.new("CMYK", (2, 1), (0, 255, 255, 0)), "CMYK", RED, 0),
]


@pytest.mark.parametrize(
    ("name", "image", "mode", "expected", "tol"),
    FILE_MODE_CASES,
    ids=[c[0] for c in FILE_MODE_CASES],
)
def test_file_modes(
    tmp_path: Path,
    name: str,
    image: Image.Image,
    mode: str,
    expected: tuple[int, int, int],
    tol: int,
) -> None:
    path = _write(tmp_path / name, image, **({"lossless": True} if name.endswith("webp") else {}))
    with Image.open(path) as check:
        assert check.mode == mode  # the file really carries that mode
    img, info = load_image(path)
    assert img.mode == "RGB"
    assert (info.width, info.height) == image.size
    assert_close(pixel(img), expected, tol)


def test_palette_png_with_per_index_alpha(tmp_path: Path) -> None:
    # Quantised PNGs (pngquant and friends) store one alpha per palette entry.
    src = _rgba((255, 0, 0, 0), (255, 0, 0, 128), (0, 0, 255, 255))
    path = _write(tmp_path / "quant.png", src.quantize(3, method=Image.Quantize.FASTOCTREE))
    with Image.open(path) as check:
        assert check.mode == "P"
        assert isinstance(check.info["transparency"], bytes)
    img, _ = load_image(path)
    assert pixel(img, (0, 0)) == WHITE
    assert_close(pixel(img, (1, 0)), HALF_RED)
    assert pixel(img, (2, 0)) == BLUE


# --- EXIF ---------------------------------------------------------------------------------------


def _exif(orientation: int | None = None, taken: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if taken is not None:
        exif.get_ifd(0x8769)[36867] = taken
    return exif


@pytest.mark.parametrize(
    ("orientation", "size", "red_at", "blue_at"),
    [
        (1, (40, 20), (5, 10), (35, 10)),
        (3, (40, 20), (35, 10), (5, 10)),  # rotated 180: red on the right
        (6, (20, 40), (10, 5), (10, 35)),  # rotated 90 clockwise: left edge goes to the top
        (8, (20, 40), (10, 35), (10, 5)),  # rotated 90 counter-clockwise: left edge at bottom
    ],
)
def test_exif_orientation(
    tmp_path: Path,
    orientation: int,
    size: tuple[int, int],
    red_at: tuple[int, int],
    blue_at: tuple[int, int],
) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    two_halves(40, 20).save(path, quality=95, exif=_exif(orientation))
    img, info = load_image(path)
    assert img.size == size
    assert (info.width, info.height) == size
    assert_close(pixel(img, red_at), RED, 6)
    assert_close(pixel(img, blue_at), BLUE, 6)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_taken_at_from_exif_datetime_original(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"dated.{ext}"
    # Pillow's PNG writer drops EXIF whose IFD0 is empty, hence the orientation tag.
    exif = _exif(orientation=1, taken="2021:07:04 15:30:59")
    Image.new("RGB", (8, 8), COLOUR).save(path, exif=exif)
    _, info = load_image(path)
    assert info.taken_at == datetime(2021, 7, 4, 15, 30, 59)
    assert info.taken_at.tzinfo is None


@pytest.mark.parametrize(
    "exif",
    [None, _exif(orientation=1), _exif(taken="0000:00:00 00:00:00"), _exif(taken="yesterday")],
    ids=["no-exif", "no-date", "unset-clock", "garbage"],
)
def test_taken_at_none(tmp_path: Path, exif: Image.Exif | None) -> None:
    path = tmp_path / "undated.jpg"
    Image.new("RGB", (8, 8), COLOUR).save(path, **({} if exif is None else {"exif": exif}))
    img, info = load_image(path)
    assert info.taken_at is None
    assert img.size == (8, 8)


# --- JPEG draft ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("draft") / "big.jpg"
    two_halves(2000, 1500).save(path, quality=90)
    return path


def test_jpeg_draft_reduces_decode_but_reports_original_size(big_jpeg: Path) -> None:
    img, info = load_image(big_jpeg, min_side=224)
    assert img.mode == "RGB"
    assert 224 <= img.width < 2000
    assert 224 <= img.height < 1500
    assert img.width * 1500 == img.height * 2000  # DCT scaling keeps the aspect ratio
    assert (info.width, info.height) == (2000, 1500)
    assert_close(pixel(img, (img.width // 4, img.height // 2)), RED, 6)


def test_jpeg_without_min_side_decodes_full_size(big_jpeg: Path) -> None:
    img, info = load_image(big_jpeg)
    assert img.size == (2000, 1500)
    assert (info.width, info.height) == (2000, 1500)


def test_jpeg_draft_keeps_both_sides_at_least_min_side(big_jpeg: Path) -> None:
    for min_side in (100, 224, 336, 600, 1500, 1600):
        img, _ = load_image(big_jpeg, min_side=min_side)
        assert min(img.size) >= min(min_side, 1500), (min_side, img.size)


def test_jpeg_draft_with_exif_rotation(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    two_halves(2000, 1500).save(path, quality=90, exif=_exif(orientation=6))
    img, info = load_image(path, min_side=224)
    assert (info.width, info.height) == (1500, 2000)
    assert img.width < img.height < 2000
    assert min(img.size) >= 224
    assert_close(pixel(img, (img.width // 2, img.height // 4)), RED, 6)


def test_mpo_is_drafted_like_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "camera.mpo"
    frames = [two_halves(800, 600), Image.new("RGB", (800, 600), BLUE)]
    frames[0].save(path, "MPO", save_all=True, append_images=frames[1:], quality=90)
    img, info = load_image(path, min_side=100)
    assert info.format == "MPO"
    assert (info.width, info.height) == (800, 600)
    assert min(img.size) >= 100 and img.width < 800
    assert_close(pixel(img, (img.width // 4, img.height // 2)), RED, 6)


def test_draft_never_applies_to_other_formats(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (900, 600), COLOUR).save(path)
    img, _ = load_image(path, min_side=100)
    assert img.size == (900, 600)


def test_invalid_arguments_are_caller_bugs(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError):
        load_image(path, min_side=0)
    with pytest.raises(ValueError):
        load_image(path, max_pixels=0)


# --- pixel cap ----------------------------------------------------------------------------------


def test_default_max_pixels() -> None:
    assert DEFAULT_MAX_PIXELS == 100_000_000


def test_small_cap_refuses_normal_image(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", Image.new("RGB", (64, 48), COLOUR))
    assert decode_error(path, max_pixels=1000).reason == "too many pixels (64x48 > 1000)"
    assert load_image(path, max_pixels=64 * 48)[0].size == (64, 48)  # the cap is inclusive


def test_header_claiming_huge_size_is_refused_before_decoding(tmp_path: Path) -> None:
    # 120 MP: above the default cap but below where Pillow raises on its own (it only warns),
    # so this exercises our check. Decoding first would report a corrupt file, not the size.
    path = png_claiming(tmp_path / "bomb.png", 12_000, 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        error = decode_error(path)
    assert error.reason == "too many pixels (12000x10000 > 100000000)"
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_header_beyond_pillows_hard_limit(tmp_path: Path) -> None:
    path = png_claiming(tmp_path / "bomb.png", 20_000, 20_000)
    assert decode_error(path).reason == "too many pixels (400000000 > 100000000)"


def test_our_cap_replaces_pillows_warning_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warn_zone = _write(tmp_path / "warn.png", Image.new("RGB", (40, 40), COLOUR))  # 1600 px
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, _ = load_image(warn_zone)
    assert pixel(img) == COLOUR
    error_zone = _write(tmp_path / "error.png", Image.new("RGB", (100, 100), COLOUR))
    assert decode_error(error_zone).reason.startswith("too many pixels (10000 > 2000")


# --- failures -----------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert decode_error(path).reason == "empty file"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 10)
    assert decode_error(path).reason == "not an image"


@pytest.mark.parametrize(
    ("name", "save_kwargs"), [("cut.png", {}), ("cut.jpg", {"quality": 90}), ("cut.webp", {})]
)
def test_truncated_file(tmp_path: Path, name: str, save_kwargs: dict[str, object]) -> None:
    path = tmp_path / name
    noise(96, 96).save(path, **save_kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    error = decode_error(path)
    assert error.reason.startswith("truncated or corrupt image: ") or error.reason == "not an image"
    if name != "cut.webp":  # libwebp refuses a truncated file already when identifying it
        assert error.reason.startswith("truncated or corrupt image: ")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"\xff\xd8\xff\xe0" + b"\x00" * 40,
        b"GIF89a" + b"\xff" * 20,
        b"BM" + b"\xff" * 60,
        b"II*\x00" + b"\xff" * 60,
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 16,
        bytes(range(256)) * 4,
    ],
    ids=["png", "jpeg", "gif", "bmp", "tiff", "webp", "binary"],
)
def test_garbage_with_image_signatures(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "garbage.img"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Corrupt EXIF data" and friends stay inside
        reason = decode_error(path).reason
    assert reason == "not an image" or reason.startswith("truncated or corrupt image: ")


def test_corrupt_pixel_data(tmp_path: Path) -> None:
    path = tmp_path / "flipped.png"
    noise(64, 64).save(path)
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT") + 4
    data[idat + 10 : idat + 200] = bytes(190)  # breaks the zlib stream (and the chunk CRC)
    path.write_bytes(bytes(data))
    assert decode_error(path).reason.startswith("truncated or corrupt image: ")


def test_missing_file(tmp_path: Path) -> None:
    reason = decode_error(tmp_path / "nope.jpg").reason
    assert reason == "unreadable: no such file or directory"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "album.jpg").mkdir()
    reason = decode_error(tmp_path / "album.jpg").reason
    assert reason.startswith("unreadable: ")
    if sys.platform.startswith("linux"):
        assert reason == "unreadable: is a directory"


def test_decode_error_shape() -> None:
    error = DecodeError("empty file")
    assert error.reason == "empty file"
    assert str(error) == "empty file"
    copy = pickle.loads(pickle.dumps(error))  # crosses DataLoader worker boundaries
    assert isinstance(copy, DecodeError)
    assert copy.reason == "empty file"


def test_image_info_is_frozen() -> None:
    info = ImageInfo(width=1, height=2, format="PNG", taken_at=None)
    with pytest.raises(FrozenInstanceError):
        info.width = 3  # type: ignore[misc]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_no_file_handles_leak(tmp_path: Path) -> None:
    good = [
        _write(tmp_path / "a.jpg", noise(32, 32)),
        _write(tmp_path / "a.tif", noise(32, 32)),
    ]
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    good.append(tmp_path / "anim.gif")
    bad = tmp_path / "bad.png"
    bad.write_bytes(_write(tmp_path / "n.png", noise(64, 64)).read_bytes()[:300])
    bomb = png_claiming(tmp_path / "bomb.png", 12_000, 10_000)
    text = tmp_path / "t.jpg"
    text.write_text("hello")

    # Results and errors (with their tracebacks) stay referenced, so a handle left open could
    # not be rescued by garbage collection.
    kept: list[object] = []
    before = len(os.listdir("/proc/self/fd"))
    for path in good:
        kept.append(load_image(path))
    for path in (bad, bomb, text):
        with pytest.raises(DecodeError) as excinfo:
            load_image(path)
        kept.append(excinfo)
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(kept) == 6


# --- HEIF / AVIF (optional decoders) ------------------------------------------------------------


def test_heic_with_pillow_heif(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "photo.heic"
    pillow_heif.from_pillow(Image.new("RGB", (64, 48), COLOUR)).save(path, quality=95)
    img, info = load_image(path)
    assert info.format == "HEIF"
    assert (img.mode, img.size) == ("RGB", (64, 48))
    assert_close(pixel(img, (32, 24)), COLOUR, 8)


def test_heic_without_pillow_heif_names_the_extra(tmp_path: Path) -> None:
    path = tmp_path / "photo.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    # A process in which the extra is not installed (None in sys.modules: import fails).
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from clipsearch.base.images import DecodeError, load_image\n"
        "try:\n    load_image(sys.argv[1])\nexcept DecodeError as e:\n    print(e.reason)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert result.stdout.strip() == "unsupported format (install clipsearch[heif])", result.stderr


def test_avif(tmp_path: Path) -> None:
    if not avif_readable():
        pytest.skip("this Pillow has no AVIF plugin")
    path = tmp_path / "photo.avif"
    Image.new("RGB", (64, 48), COLOUR).save(path, quality=95)
    img, info = load_image(path)
    assert info.format == "AVIF"
    assert (img.mode, img.size) == ("RGB", (64, 48))
    assert_close(pixel(img, (32, 24)), COLOUR, 8)
