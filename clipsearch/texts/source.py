"""A texts FILE read into texts and ids: one text per line, blanks skipped, repeats kept once."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.errors import ClipsearchError

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class SourceTexts:
    """The texts of a UTF-8 file, one per line: blank lines skipped, repeats kept once."""

    path: Path
    ids: list[int]  # 0-based line number of each kept text
    texts: list[str]
    lines: int
    blank: int
    duplicates: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "lines": self.lines,
            "blank": self.blank,
            "duplicates": self.duplicates,
        }


def read_texts_file(path: str | os.PathLike) -> SourceTexts:
    """Read a texts file; every problem is a one-line ClipsearchError naming the file."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ClipsearchError(f"no such texts file: {path}") from None
    except IsADirectoryError:
        raise ClipsearchError(f"{path} is a directory, not a texts file") from None
    except OSError as exc:
        raise ClipsearchError(f"cannot read texts file {path}: {exc.strerror or exc}") from None
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ClipsearchError(
            f"texts file {path} is not UTF-8 (invalid byte on line {line})"
        ) from None
    if "\x00" in content:
        raise ClipsearchError(f"texts file {path} is binary, not one text per line")
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no new one
    ids: list[int] = []
    texts: list[str] = []
    seen: set[str] = set()
    blank = duplicates = 0
    for number, raw in enumerate(lines):
        text = raw.strip()
        if not text:
            blank += 1
        elif text in seen:
            duplicates += 1
        else:
            seen.add(text)
            ids.append(number)
            texts.append(text)
    if not texts:
        raise ClipsearchError(f"no texts in {path}: it is empty or has only blank lines")
    sha256 = hashlib.sha256(data).hexdigest()
    return SourceTexts(path, ids, texts, len(lines), blank, duplicates, sha256)
