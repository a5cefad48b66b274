"""Query terms: several texts and images, each with a sign and weight, combined into one vector.

A text term is ``[+|-][WEIGHT:]TEXT``: ``"beach"``, ``"2:beach"``, ``"-people"``,
``"-0.5:people"``. The query vector is the weighted sum of the terms' normalized embeddings,
renormalized, so ``["2:beach", "-people"]`` finds beaches and pushes people down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from clipsearch.errors import ClipsearchError

_WEIGHTED = re.compile(r"^\s*([+-]?)\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*:)?(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Term:
    text: str
    weight: float = 1.0


def parse_term(raw: str) -> Term:
    """Split a sign and a weight off a text term; a colon not after a number is just text."""
    match = _WEIGHTED.match(raw)
    sign, weight, text = match.groups() if match else ("", None, raw)
    text = text.strip()
    if not text:
        raise ClipsearchError(f"empty query term {raw!r}")
    value = float(weight) if weight else 1.0
    return Term(text, -value if sign == "-" else value)


def combine(vectors: np.ndarray, weights: list[float] | np.ndarray) -> np.ndarray:
    """Weighted sum of unit vectors, renormalized; a sum that cancels out is an error."""
    weights = np.asarray(weights, dtype=np.float32).reshape(-1, 1)
    total = (vectors.astype(np.float32) * weights).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise ClipsearchError("the query terms cancel each other out: nothing left to search for")
    return total / norm
