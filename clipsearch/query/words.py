"""Search by the words written in photos: the catalog's ``text`` (``index --ocr``).

OCR output is imperfect in known ways, so both the photos' text and the query are *folded*
before they are compared: case, accents and the characters OCR confuses (0/o, 1/l/i, 5/s,
8/b) never matter ("Müller" finds "MULLER", "Oslo" finds "0slo"). A query word of four
letters or more also matches a word one edit away (a letter dropped, added or misread).

Every query word found scores its rarity (inverse document frequency), an exact match in
full and a near one ``NEAR_WEIGHT`` of it; a photo's score is the sum over the query's
words. A query in double quotes is a phrase: its folded words, in order, must appear as
they are. The folding runs on the whole column at once (Arrow), so a query over 100k
photos' text costs milliseconds (benchmarks/RESULTS.md, "Text in photos").
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Characters OCR reads for one another, folded to one; both sides are folded alike.
LOOKALIKES = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "8": "b"})
# Letters no Unicode decomposition takes apart.
LETTERS = {"ø": "o", "ß": "ss", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "þ": "th"}
NEAR_WEIGHT = 0.6
NEAR_MIN_LENGTH = 4  # shorter words match exactly only ("12" is not "13")
# Words that say nothing about which photo is meant: no photo is found by them alone.
# fmt: off
STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of",
    "on", "or", "the", "to", "with", "photo", "picture", "image",
])
# fmt: on


def fold(text: str) -> str:
    """``text`` as words are compared: lower case, no accents, OCR's look-alikes as one,
    anything but letters and digits a single space."""
    return " ".join(_unaccented(text).translate(LOOKALIKES).split())


def _unaccented(text: str) -> str:
    """Lower case, no accents, anything but letters and digits a space."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(LETTERS.get(c, c) for c in text if not unicodedata.combining(c))
    return re.sub(r"[\W_]+", " ", text)


def fold_column(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``fold`` over a column of texts at once, with spaces around each so that a word
    matches as `` word ``; null stays null."""
    folded = pc.utf8_normalize(pc.utf8_lower(texts), form="NFKD")
    folded = pc.replace_substring_regex(folded, r"\p{Mn}+", "")
    for source, target in LETTERS.items():
        folded = pc.replace_substring(folded, source, target)
    for source, target in {chr(k): v for k, v in LOOKALIKES.items()}.items():
        folded = pc.replace_substring(folded, source, target)
    folded = pc.replace_substring_regex(folded, r"[^\p{L}\p{N}]+", " ")
    return pc.binary_join_element_wise(" ", pc.utf8_trim_whitespace(folded), " ", "")


@dataclass(frozen=True)
class WordQuery:
    words: tuple[str, ...]  # folded, in order
    telling: tuple[bool, ...]  # per word: one that can find a photo (not "a", "of", ...)
    phrase: bool  # the query was quoted: its words in order, exactly
    numbered: bool = False  # it holds a number ("EXIT 12", "A4-2291"): written words, surely

    @property
    def searchable(self) -> bool:
        return any(self.telling)

    def telling_words(self) -> list[str]:
        return list(dict.fromkeys(w for w, t in zip(self.words, self.telling, strict=True) if t))

    def joined_forms(self, word: str) -> list[str]:
        """``word`` run together with the word before or after it in the query: OCR often
        drops a space ("BUS 74" read as "BUS74")."""
        forms = []
        for i, found in enumerate(self.words):
            if found == word:
                forms += [self.words[i - 1] + word] if i else []
                forms += [word + self.words[i + 1]] if i + 1 < len(self.words) else []
        return forms


def parse(query: str) -> WordQuery:
    stripped = query.strip()
    phrase = len(stripped) > 1 and stripped[0] == stripped[-1] == '"'
    # Whether a word tells is judged before the look-alikes fold ("12" is a number, "lz" not).
    plain = _unaccented(stripped.strip('"')).split()
    telling = tuple(_telling(word) for word in plain)
    numbered = any(c.isdigit() for c in stripped)
    return WordQuery(tuple(word.translate(LOOKALIKES) for word in plain), telling, phrase, numbered)


@dataclass(frozen=True)
class WordHit:
    id: int
    score: float  # the rarities of the query words found (near ones at NEAR_WEIGHT)
    complete: bool  # every telling word of the query found as it is (a phrase: found)
    nearly: bool  # every telling word found, as it is or one edit away (OCR misread one)


def rank(
    ids: np.ndarray,
    folded: pa.Array,
    query: WordQuery,
    limit: int,
    allowed: np.ndarray | None = None,
) -> list[WordHit]:
    """The ``limit`` best photos by their words, best first; photos that match no telling
    word of the query are left out. ``folded``: ``fold_column`` of their text;
    ``allowed``: only these ids (a filter's)."""
    if allowed is not None:
        keep = np.isin(ids, allowed)
        ids, folded = ids[keep], folded.filter(pa.array(keep))
    if not query.searchable or not len(ids):
        return []
    if query.phrase:
        hit = pc.fill_null(pc.match_substring(folded, f" {' '.join(query.words)} "), False)
        scores = np.asarray(hit, dtype=np.float64)
        complete = nearly = scores > 0
    else:
        # One pass over every text finds the photos with any of the words (or a near form);
        # each word is then told apart on those few alone.
        forms = {word: _forms(query, word) for word in query.telling_words()}
        every = [variant for exact, near in forms.values() for variant in exact + near]
        total = len(ids)  # rarity is among all the photos with text
        found_any = np.flatnonzero(_contains(folded, every))
        ids, folded = ids[found_any], folded.take(pa.array(found_any))
        scores = np.zeros(len(ids))
        complete = np.ones(len(ids), dtype=bool)
        nearly = complete.copy()
        for exact_forms, near_forms in forms.values():
            exact = _contains(folded, exact_forms)
            near = exact | _contains(folded, near_forms) if near_forms else exact
            complete &= exact
            nearly &= near
            found = int(near.sum())
            if not found:
                continue
            rarity = math.log(1 + total / found)
            scores += rarity * np.where(exact, 1.0, np.where(near, NEAR_WEIGHT, 0.0))
    order = np.argsort(-scores, kind="stable")[:limit]
    return [
        WordHit(int(ids[i]), float(scores[i]), bool(complete[i]), bool(nearly[i]))
        for i in order
        if scores[i] > 0
    ]


def _forms(query: WordQuery, word: str) -> tuple[list[str], list[str]]:
    """The regular expressions that find ``word`` as it is (and run together with its
    neighbour), and one edit away (for words long enough)."""
    exact = [re.escape(form) for form in [word, *query.joined_forms(word)]]
    near = _one_edit(word) if len(word) >= NEAR_MIN_LENGTH else []
    return exact, near


def marks(text: str, query: WordQuery) -> list[tuple[int, int]]:
    """Where the query's words are in ``text`` (the photo's own, unfolded): (start, end)
    character spans of each word that matches, for showing."""
    wanted = list(query.words) if query.phrase else query.telling_words()
    joined = {form for word in wanted for form in query.joined_forms(word)}
    spans = []
    for found in re.finditer(r"[^\W_]+", text):
        word = fold(found.group())
        near = any(len(w) >= NEAR_MIN_LENGTH and _near(word, w) for w in wanted)
        if word in wanted or word in joined or near:
            spans.append((found.start(), found.end()))
    return spans


def _contains(folded: pa.Array, patterns: list[str]) -> np.ndarray:
    """Which texts hold a whole word that any of ``patterns`` (regular expressions) matches."""
    found = pc.match_substring_regex(folded, f" (?:{'|'.join(patterns)}) ")
    return np.asarray(pc.fill_null(found, False), dtype=bool)


def _telling(word: str) -> bool:
    return word not in STOPWORDS and (len(word) >= 3 or any(c.isdigit() for c in word))


def _one_edit(word: str) -> list[str]:
    """Regular expressions for every word one edit away from ``word``, ``word`` included."""
    quoted = [re.escape(c) for c in word]
    variants = {"".join(quoted)}
    for i in range(len(word)):
        variants.add("".join(quoted[:i] + quoted[i + 1 :]))  # a letter dropped
        variants.add("".join([*quoted[:i], r"[^ ]", *quoted[i + 1 :]]))  # one misread
    for i in range(len(word) + 1):
        variants.add("".join([*quoted[:i], r"[^ ]", *quoted[i:]]))  # one added
    return sorted(variants)


def _near(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are at most one edit apart."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    for i in range(len(a)):
        if a[i] != b[i]:
            return a[i + (len(a) == len(b)) :] == b[i + 1 :]
    return True


def marked(text: str, marks: Sequence[Sequence[int]], width: int = 72) -> str:
    """The photo's text on one line, the words found in [brackets], cut around the first."""
    shown, end = [], 0
    for start, stop in marks:
        shown += [text[end:start], "[", text[start:stop], "]"]
        end = stop
    line = " ".join("".join([*shown, text[end:]]).split())
    first = line.find("[")
    begin = max(0, min(first - width // 3, len(line) - width))
    return (
        ("…" if begin else "")
        + line[begin : begin + width]
        + ("…" if begin + width < len(line) else "")
    )
