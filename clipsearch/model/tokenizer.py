"""Tokenizers without torch, giving the token ids open_clip's tokenizers give.

Two kinds, as in open_clip:
- ``clip-bpe``: CLIP's byte-level BPE (open_clip's ``SimpleTokenizer``), run by Hugging Face
  ``tokenizers`` after the same text cleaning (ftfy, HTML unescaping, whitespace, lower
  case). ``clip_bpe_json`` builds it from open_clip's merges file once, at export; loading
  the saved ``tokenizer.json`` then takes milliseconds instead of ~0.1 s.
- ``hf``: a Hugging Face tokenizer (e.g. the MiniLM text tower's WordPiece) from its
  ``tokenizer.json``, padded and truncated as open_clip's ``HFTokenizer`` does.

Both return int64 arrays of shape (n, context_length).
"""

from __future__ import annotations

import gzip
import html
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLIP_BPE = "clip-bpe"
HF = "hf"
CLEANERS = ("lower", "whitespace", "canonicalize")
_SPECIAL = ("<start_of_text>", "<end_of_text>")
# open_clip's split pattern: special tokens, English contractions, letter runs, single
# digits, and runs of anything else but whitespace.
_CLIP_PATTERN = (
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
_VOCAB_MERGES = 49152 - 256 - 2  # the merges open_clip reads from the file


@dataclass(frozen=True)
class TokenizerConfig:
    kind: str  # CLIP_BPE or HF
    file: str  # the tokenizers library's tokenizer.json (or .json.gz), relative to the model
    # directory
    context_length: int
    clean: str = "lower"
    strip_sep_token: bool = False  # hf only: open_clip's option to blank out [SEP]

    def __post_init__(self) -> None:
        if self.kind not in (CLIP_BPE, HF):
            raise ValueError(f"unknown tokenizer kind {self.kind!r}")
        if self.clean not in CLEANERS:
            raise ValueError(f"unknown text cleaning {self.clean!r}")
        if self.context_length < 2:
            raise ValueError(f"context length {self.context_length} is too short")


class Tokenizer:
    """Texts → int64 token ids (n, context_length)."""

    def __init__(self, cfg: TokenizerConfig, directory: Path) -> None:
        from tokenizers import Tokenizer as HfTokenizer

        self.cfg = cfg
        self._clean: Callable[[str], str] = _CLEANERS[cfg.clean]
        path = directory / cfg.file
        if path.suffix == ".gz":  # a bundled model's: a third of the size
            with gzip.open(path) as f:
                self._tokenizer = HfTokenizer.from_str(f.read().decode("utf-8"))
        else:
            self._tokenizer = HfTokenizer.from_file(str(path))
        if cfg.kind == CLIP_BPE:
            self._sot = self._tokenizer.token_to_id(_SPECIAL[0])
            self._eot = self._tokenizer.token_to_id(_SPECIAL[1])
        else:
            self._tokenizer.enable_truncation(max_length=cfg.context_length)
            padding = self._tokenizer.padding or {}
            self._tokenizer.enable_padding(
                length=cfg.context_length,
                pad_id=padding.get("pad_id", 0),
                pad_token=padding.get("pad_token", "[PAD]"),
            )
            self._sep = self._tokenizer.token_to_id("[SEP]")

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        cleaned = [self._clean(text) for text in texts]
        length = self.cfg.context_length
        ids = np.zeros((len(cleaned), length), np.int64)
        if not cleaned:
            return ids
        encodings = self._tokenizer.encode_batch(cleaned, add_special_tokens=True)
        for row, encoding in enumerate(encodings):
            if self.cfg.kind == CLIP_BPE:
                # clip_bpe_json's vocabulary holds both special tokens.
                assert self._sot is not None and self._eot is not None
                # open_clip keeps the first context_length - 1 tokens and ends with EOT.
                tokens = [self._sot, *encoding.ids][: length - 1]
                tokens.append(self._eot)
            else:
                tokens = encoding.ids
            ids[row, : len(tokens)] = tokens
        if self.cfg.kind == HF and self.cfg.strip_sep_token and self._sep is not None:
            ids[ids == self._sep] = 0
        return ids


def clip_bpe_json(merges_file: Path) -> str:
    """CLIP's BPE as a ``tokenizers`` model, serialized (the text of a tokenizer.json): the
    vocabulary is built as open_clip builds it (256 byte symbols, the same with "</w>", one
    entry per merge, two special tokens)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    with gzip.open(merges_file) as f:
        lines = f.read().decode("utf-8").split("\n")[1 : _VOCAB_MERGES + 1]
    merges = [(first, second) for first, second in (line.split() for line in lines)]
    # Sorting the byte-level symbols by code point gives CLIP's table order: the printable
    # bytes as themselves, then the others remapped to chr(256 + n), in byte order.
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord)
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += list(_SPECIAL)
    tokenizer = Tokenizer(
        models.BPE(
            vocab={token: i for i, token in enumerate(vocab)},
            merges=merges,
            end_of_word_suffix="</w>",
        )
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.add_special_tokens(list(_SPECIAL))
    return tokenizer.to_str()


# Text that ftfy and HTML unescaping leave as it is: printable ASCII, tabs and newlines, no
# "&" (ftfy repairs mojibake, which needs non-ASCII characters, and controls, escapes and
# "\r" line breaks). Most queries are such text, and they skip importing ftfy (~40 ms).
_CLEAN_ALREADY = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


def _basic_clean(text: str) -> str:
    if _CLEAN_ALREADY.fullmatch(text):
        return text.strip()
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace(text: str) -> str:
    return " ".join(text.split())


_PUNCTUATION = str.maketrans("", "", string.punctuation)
_CLEANERS: dict[str, Callable[[str], str]] = {
    "lower": lambda text: _whitespace(_basic_clean(text)).lower(),
    "whitespace": lambda text: _whitespace(_basic_clean(text)),
    "canonicalize": lambda text: _whitespace(
        _basic_clean(text).replace("_", " ").translate(_PUNCTUATION).lower()
    ),
}
