"""Decode stage of the indexer: one image file -> upright 8-bit RGB image plus catalog metadata.

Runs once per file inside DataLoader worker processes, so bad input must never crash or exhaust
memory: every failure becomes a :class:`DecodeError` whose short ``reason`` the indexer records
before moving on. Pure Pillow + numpy on purpose: workers must not pay for importing torch.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from clipsearch.settings import DEFAULT_MAX_PIXELS

__all__ = ["DEFAULT_MAX_PIXELS", "DecodeError", "ImageInfo", "load_image", "to_rgb"]


_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_ORIENTATION = 0x0112
_SIDEWAYS_ORIENTATIONS = frozenset({5, 6, 7, 8})
# MPO is what Pillow calls the multi-picture JPEGs many cameras write; its frame 0 is a JPEG.
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_WHITE = (255, 255, 255)
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_MAX_DETAIL = 160


@dataclass(frozen=True)
class ImageInfo:
    """Catalog metadata of the original file (sizes as displayed, i.e. after EXIF orientation)."""

    width: int
    height: int
    format: str | None
    taken_at: datetime | None


class DecodeError(Exception):
    """A file that could not be decoded; ``reason`` is a short lowercase phrase for the catalog."""

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_image(
    path: str | os.PathLike[str],
    *,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[Image.Image, ImageInfo]:
    """Open, decode and normalise one image file to RGB.

    ``min_side``: the smallest side the caller will resize to; lets JPEGs decode at a reduced
    scale that still keeps both sides >= ``min_side``. ``max_pixels``: files whose header
    declares more pixels are refused before any pixel is decoded.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    _register_heif_opener()
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with-block right below
    except OSError as e:
        raise DecodeError(f"unreadable: {_strerror(e)}") from e
    with f:
        try:
            head = f.read(32)
        except OSError as e:
            raise DecodeError(f"unreadable: {_strerror(e)}") from e
        if not head:
            raise DecodeError("empty file")
        # Everything that touches the file happens in here: once it is closed only the decoded
        # pixels remain (Pillow reads some metadata, e.g. TIFF Exif sub-IFDs, lazily from the file).
        return _decode(f, head, min_side, max_pixels)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB correctly (public so other code can reuse it).

    Transparency is composited on white; 16/32-bit and float images are scaled to 0..255 by
    their value range rather than clipped. RGB images are returned as is, not copied.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_gray_to_uint8(np.asarray(image), mode)).convert("RGB")
    if image.has_transparency_data:
        # La (premultiplied) has no direct conversion to RGBA in Pillow.
        rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba)
        return background
    if mode == "LAB":
        return _lab_to_rgb(image)
    return image.convert("RGB")


def _decode(
    f: IO[bytes], head: bytes, min_side: int | None, max_pixels: int
) -> tuple[Image.Image, ImageInfo]:
    with warnings.catch_warnings():
        # Pillow warns above its global Image.MAX_IMAGE_PIXELS; max_pixels is checked below
        # instead, per call, without touching that global for other users of Pillow.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Pillow's per-file complaints (corrupt EXIF, odd chunks) would only be noise in worker
        # logs: a file either decodes or becomes a DecodeError with a reason.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        try:
            img = Image.open(f)
        except Image.DecompressionBombError as e:
            raise DecodeError(_bomb_reason(e, max_pixels)) from e
        except UnidentifiedImageError as e:
            raise DecodeError(_unidentified_reason(head)) from e
        except MemoryError as e:
            raise DecodeError("out of memory while decoding") from e
        except Exception as e:
            raise DecodeError(f"truncated or corrupt image: {_detail(e)}") from e

        width, height = img.size
        if width * height > max_pixels:
            raise DecodeError(f"too many pixels ({width}x{height} > {max_pixels})")
        fmt = img.format
        try:
            if min_side is not None and fmt in _JPEG_FORMATS:
                img.draft("RGB", (min_side, min_side))
            # Decode now, strictly: a truncated file must fail here, never come back half grey.
            img.load()
            exif = _read_exif(img)
            orientation = exif.get(_ORIENTATION, 1)
            if not isinstance(orientation, int):
                orientation = 1
            if orientation in range(2, 9):
                ImageOps.exif_transpose(img, in_place=True)
            rgb = to_rgb(img)
            taken_at = _taken_at(exif)
        except Image.DecompressionBombError as e:
            raise DecodeError(_bomb_reason(e, max_pixels)) from e
        except MemoryError as e:
            raise DecodeError("out of memory while decoding") from e
        except Exception as e:
            raise DecodeError(f"truncated or corrupt image: {_detail(e)}") from e

    if orientation in _SIDEWAYS_ORIENTATIONS:
        width, height = height, width
    return rgb, ImageInfo(width=width, height=height, format=fmt, taken_at=taken_at)


def _read_exif(img: Image.Image) -> Image.Exif:
    # Broken metadata must not cost an otherwise good picture: treat it as absent.
    try:
        return img.getexif()
    except Exception:
        return Image.Exif()


def _taken_at(exif: Image.Exif) -> datetime | None:
    try:
        value = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL)
    except Exception:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    # Cameras pad with NULs/spaces and append sub-seconds or zones; the first 19 chars are fixed.
    text = value.strip("\x00 ")[:19]
    for pattern in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    return None  # includes the "0000:00:00 00:00:00" that cameras write when the clock is unset


def _gray_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    if arr.size == 0:
        return arr.astype(np.uint8)
    if mode.startswith("I;16"):
        return _scale16(arr)
    if mode == "I":
        low, high = int(arr.min()), int(arr.max())
        if low >= 0 and high <= 0xFFFF:
            # Pillow widens 16-bit sources (PGM, some PNG/TIFF paths) to I, so this is the
            # usual content; scaling by the full int32 range would turn it uniformly grey.
            return _scale16(arr)
        return ((arr.astype(np.int64) + 2**31) >> 24).astype(np.uint8)
    # F: no fixed range, so pick the convention that the values fit.
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= 1.0:
        scaled = arr * 255.0
    elif hi <= 255.0:
        scaled = arr
    elif hi <= 65535.0:
        scaled = arr / 257.0
    else:
        scaled = (arr - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _scale16(arr: np.ndarray) -> np.ndarray:
    # 65535 / 257 == 255 exactly; +128 rounds to nearest.
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    # Image.convert("RGB") reinterprets LAB channels as RGB; a colour transform is needed.
    try:
        from PIL import ImageCms

        transform = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        converted = ImageCms.applyTransform(image, transform)
        assert converted is not None  # None only with inPlace=True
        return converted
    except ImportError:  # Pillow built without littlecms
        return image.convert("RGB")


@functools.cache
def _register_heif_opener() -> bool:
    try:
        import pillow_heif
    except Exception:  # absent, or its native library failed to load
        return False
    pillow_heif.register_heif_opener()
    # pillow_heif < 0.22 can also read AVIF; Pillow's own plugin wins where it has one.
    if hasattr(pillow_heif, "register_avif_opener") and not _native_avif():
        pillow_heif.register_avif_opener()
    return True


def _native_avif() -> bool:
    try:
        return bool(features.check_module("avif"))
    except ValueError:  # Pillow < 11.2 does not know the module name
        return False


def _unidentified_reason(head: bytes) -> str:
    # ISO-BMFF container: the major brand says which optional decoder was missing.
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return "unsupported format (avif needs pillow >= 11.3)"
        if brand in _HEIF_BRANDS and not _register_heif_opener():
            return "unsupported format (install clipsearch[heif])"
    return "not an image"


def _bomb_reason(error: Exception, max_pixels: int) -> str:
    match = re.search(r"\((\d+) pixels\).*?limit of (\d+)", str(error))
    if match is None:
        return f"too many pixels (> {max_pixels})"
    pixels, pillow_limit = int(match[1]), int(match[2])
    if pixels > max_pixels:
        return f"too many pixels ({pixels} > {max_pixels})"
    # Pillow refuses outright at 2 * Image.MAX_IMAGE_PIXELS, even below a larger max_pixels.
    return f"too many pixels ({pixels} > {pillow_limit}, pillow's limit)"


def _detail(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return text


def _strerror(error: OSError) -> str:
    return (error.strerror or _detail(error)).lower()
