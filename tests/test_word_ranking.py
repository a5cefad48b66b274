"""Ranking photos by the words read in them, and fusing that with the ranking by meaning:
on the photos' text as OCR gives it (no OCR model needed here)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from clipsearch.query import words
from clipsearch.query.search import _fused

# id → the text read in that photo (OCR's mistakes included)
TEXTS = {0: "M6-0036\nGATE", 1: "", 2: "EXIT l2", 3: "Bäckerei MULLER"}


def _word_hits(query: str) -> list[words.WordHit]:
    ids = np.array(list(TEXTS))
    return words.rank(
        ids, words.fold_column(pa.array(list(TEXTS.values()))), words.parse(query), 10
    )


def _fuse(query: str, by_meaning: list[tuple[int, float]]) -> list[int]:
    wanted = words.parse(query)
    fused = _fused(
        by_meaning, _word_hits(query), wanted.numbered, 3, lambda ids: dict.fromkeys(ids, 0.1)
    )
    return [row_id for row_id, _ in fused]


def test_words_are_matched_as_ocr_reads_them():
    assert [h.id for h in _word_hits("exit 12") if h.complete] == [2]  # "l2": a look-alike
    assert [h.id for h in _word_hits("Bäckerei Müller") if h.complete] == [3]  # accents, case
    (near,) = _word_hits("M6-3036")  # one digit misread
    assert (near.id, near.complete, near.nearly) == (0, False, True)


def test_a_code_read_one_letter_off_passes_the_photos_found_by_meaning_alone():
    # The photo without text looks the part; the one with the code is far down by meaning
    # (out of the depth fused), so fusion alone ties them and puts meaning first.
    by_meaning = [(1, 0.59), (3, 0.58)]
    assert _fuse("M6-3036", by_meaning)[0] == 0
    # A query without a number may be meant by its meaning: a near match does not jump ahead.
    assert _fuse("gale", by_meaning)[0] == 1
    # Every word found as it is comes first, number or not.
    assert _fuse("gate", by_meaning)[0] == 0
