"""Read the lines of text in an image: PP-OCR (text detection, direction, recognition) run
by RapidOCR on ONNX Runtime, with the models its wheel carries (PP-OCRv6 small: Chinese and
English, Latin accents), so nothing is downloaded.

Why RapidOCR 3 (``rapidocr``): on photos with words rendered onto them it read rotated
lines, accents and spaces that the older ``rapidocr-onnxruntime`` 1.4 (PP-OCRv4) missed or
merged, at the same speed (benchmarks/RESULTS.md, "Text in photos").

Images are read upright (``base.images`` applies EXIF orientation first); lines at 90, 180
and 270 degrees are turned by the direction model. Text is found on the image shrunk (see
FIRST_LOOK) and read on crops of the image as given, whose longer side RapidOCR bounds at
2,000 px.
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
# Finding text costs as the pixels the detector sees (most of the reading time), so it looks
# at the image shrunk to FIRST_LOOK on its longer side (no photo is enlarged: that blurs
# small text), and recognition reads the crops of the full decode. Where all it found is
# small print (a receipt, a page), it looks again at SECOND_LOOK, which finds 48 of 50 lines
# of 0.8%-high text where 640 found 39: a cost only photos with such text pay, beside the
# time reading their many lines takes (benchmarks/RESULTS.md, "Text in photos").
FIRST_LOOK = 640
SECOND_LOOK = 960
SMALL_PRINT = 12  # px high at the first look's scale: where the detector starts to miss
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
        "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,
        "Det.limit_type": "max",
        "Det.limit_side_len": FIRST_LOOK,
    }
    try:
        engine: Any = RapidOCR(params=params)
        # RapidOCR calls the detector it holds, once set (rapidocr < 4; the tests read
        # small print that only the second look finds).
        engine.text_det = _TwoLooks(engine._load_det_model())
        # The sessions open on the first image: one now, so that a damaged model file is
        # this error, not every photo read as having no text.
        engine(_BLANK)
        return engine
    except Exception as exc:  # ONNX Runtime's error for a damaged model names the file
        detail = " ".join(str(exc).split())[:300]
        raise ClipsearchError(f"cannot load the OCR models: {detail}; {REINSTALL}") from None


class _TwoLooks:
    """RapidOCR's text detector, looking twice where the first look found only small print.
    Called with the image (BGR) and returning the detector's result, boxes in its pixels."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def __call__(self, image: np.ndarray) -> Any:
        self.detector.limit_side_len = FIRST_LOOK
        found = self.detector(image)
        longest = max(image.shape[:2])
        if found.boxes is None or longest <= FIRST_LOOK:
            return found  # nothing, or seen at full size already
        # A line's height is the shorter side of its box (a line turned 90 degrees too).
        boxes = np.asarray(found.boxes, dtype=np.float32)
        sides = np.linalg.norm(boxes[:, [1, 3]] - boxes[:, [0]], axis=2)
        heights = sides.min(axis=1) * FIRST_LOOK / longest
        if np.median(heights) >= SMALL_PRINT:
            return found
        self.detector.limit_side_len = SECOND_LOOK
        return self.detector(image)
