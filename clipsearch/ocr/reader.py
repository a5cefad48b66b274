"""Read the lines of text in an image: PP-OCR (text detection, direction, recognition) run
by RapidOCR on ONNX Runtime, with the models its wheel carries (PP-OCRv6 small: Chinese and
English, Latin accents), so nothing is downloaded.

Why RapidOCR 3 (``rapidocr``): on photos with words rendered onto them it read rotated
lines, accents and spaces that the older ``rapidocr-onnxruntime`` 1.4 (PP-OCRv4) missed or
merged, at the same speed (benchmarks/RESULTS.md, "Text in photos").

Images are read upright (``base.images`` applies EXIF orientation first); lines at 90, 180
and 270 degrees are turned by the direction model. RapidOCR bounds the size it works on
(the longer side at most 2,000 px).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsearch.errors import ClipsearchError

if TYPE_CHECKING:
    from PIL import Image

# The shorter side an image is decoded to for reading: small print in a large photo stays a
# few pixels high (a decode for the model alone is far smaller).
READ_MIN_SIDE = 1024
REINSTALL = "reinstall them: pip install --force-reinstall rapidocr"


@dataclass(frozen=True)
class TextLine:
    """One line of text as read: its words, how sure the reader is, and where it is (the
    four corners, clockwise from the top left, in pixels of the upright image read)."""

    text: str
    confidence: float
    box: tuple[float, ...]  # x1, y1, x2, y2, x3, y3, x4, y4

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "confidence": self.confidence, "box": list(self.box)}


def joined(lines: list[TextLine]) -> str:
    """The catalog's ``text``: the lines in reading order, one per line."""
    return "\n".join(line.text for line in lines)


class TextReader:
    """Reads text in images. The models load on the first ``read`` (a second or so), in the
    process that reads: a decode worker builds its own."""

    def __init__(self, threads: int = -1) -> None:  # -1: as ONNX Runtime chooses
        self.threads = threads
        self._engine: Any = None

    def read(self, image: Image.Image) -> list[TextLine]:
        """The lines of text in ``image`` (upright RGB), top to bottom; [] when none."""
        if self._engine is None:
            self._engine = _load_engine(self.threads)
        result = self._engine(image)
        if result.boxes is None or not result.txts:
            return []
        return [
            TextLine(text, round(float(score), 4), tuple(round(float(v), 1) for v in box.ravel()))
            for box, text, score in zip(result.boxes, result.txts, result.scores, strict=True)
            if text.strip()
        ]


def check_installed() -> None:
    """A ModuleNotFoundError naming ``rapidocr`` (the CLI names the extra) when it is not
    installed: asked before a run hands reading to its worker processes."""
    if importlib.util.find_spec("rapidocr") is None:
        raise ModuleNotFoundError("reading text in photos needs rapidocr", name="rapidocr")


_BLANK = np.full((64, 64, 3), 255, dtype=np.uint8)


def _load_engine(threads: int) -> Any:
    check_installed()
    from rapidocr import RapidOCR

    # RapidOCR logs every model it loads at INFO, on its own handler.
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    params = {
        "Global.log_level": "error",
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }
    try:
        engine = RapidOCR(params=params)
        # The sessions open on the first image: one now, so that a damaged model file is
        # this error, not every photo read as having no text.
        engine(_BLANK)
        return engine
    except Exception as exc:  # ONNX Runtime's error for a damaged model names the file
        detail = " ".join(str(exc).split())[:300]
        raise ClipsearchError(f"cannot load the OCR models: {detail}; {REINSTALL}") from None
