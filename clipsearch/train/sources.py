"""Datasets on disk -> one in-memory ``Source``: n images, their captions and/or class labels.

Formats: Parquet (image bytes or paths; captions in a column or in a captions table joined on
a key; class labels), CSV/TSV/JSONL (path + caption or label), a folder with one subfolder per
class, and webdataset tar shards (``KEY.jpg``/``KEY.png`` + ``KEY.txt``). Only metadata is
loaded here; pixels are decoded later, one image at a time, in DataLoader workers.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from clipsearch.base.images import DecodeError, load_image, to_rgb
from clipsearch.errors import ClipsearchError
from clipsearch.ingest.scan import IMAGE_EXTENSIONS
from clipsearch.train.config import SourceConfig
from clipsearch.zeroshot.templates import label_of_folder

_IMAGE_COLUMNS = ("image", "filepath", "image_path", "path", "file", "jpg", "png")
_CAPTION_COLUMNS = ("caption", "title", "text", "txt")
_LABEL_COLUMNS = ("label_name", "class_name", "label", "class")
_SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".tar": "wds",
}


class ImageColumn:
    """n images that can be read one at a time by index (in any process)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> bytes | str:
        raise NotImplementedError

    def subset(self, rows: np.ndarray) -> ImageColumn:
        raise NotImplementedError


class BytesColumn(ImageColumn):
    def __init__(self, data: Any) -> None:  # a pyarrow (Chunked)Array or a list of bytes
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def read(self, i: int) -> bytes:
        item = self.data[i]
        return item.as_py() if hasattr(item, "as_py") else item

    def subset(self, rows: np.ndarray) -> BytesColumn:
        if hasattr(self.data, "take"):
            return BytesColumn(self.data.take(rows))
        return BytesColumn([self.data[int(i)] for i in rows])


class PathColumn(ImageColumn):
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> str:
        return self.paths[i]

    def subset(self, rows: np.ndarray) -> PathColumn:
        return PathColumn([self.paths[int(i)] for i in rows])


class TarColumn(ImageColumn):
    """Members of uncompressed tar shards, read by offset (random access, no extraction)."""

    def __init__(self, shards: list[str], shard: np.ndarray, offset: np.ndarray, size: np.ndarray):
        self.shards, self.shard, self.offset, self.size = shards, shard, offset, size
        self._files: dict[int, Any] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self.shard)

    def read(self, i: int) -> bytes:
        if self._pid != os.getpid():  # file handles must not be shared with forked workers
            self._files, self._pid = {}, os.getpid()
        s = int(self.shard[i])
        if s not in self._files:
            self._files[s] = open(self.shards[s], "rb")  # noqa: SIM115 - kept open for reuse
        f = self._files[s]
        f.seek(int(self.offset[i]))
        return f.read(int(self.size[i]))

    def subset(self, rows: np.ndarray) -> TarColumn:
        return TarColumn(self.shards, self.shard[rows], self.offset[rows], self.size[rows])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}, "_pid": -1}


@dataclass
class Source:
    """A dataset: images, and per image a list of captions and/or a class index."""

    images: ImageColumn
    captions: list[list[str]] | None
    labels: np.ndarray | None
    classes: list[str] | None
    origin: str

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int, min_side: int | None = None) -> Image.Image:
        """Decode image ``i`` to RGB; raise DecodeError when it cannot be read."""
        item = self.images.read(i)
        if isinstance(item, str):
            return load_image(item, min_side=min_side)[0]
        try:
            with Image.open(io.BytesIO(item)) as img:
                img = ImageOps.exif_transpose(img)
                img.load()
                return to_rgb(img)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DecodeError(f"undecodable image bytes: {exc}") from None

    def describe(self, i: int) -> str:
        item = self.images.read(i) if isinstance(self.images, PathColumn) else f"#{i}"
        return f"{self.origin} image {item}"

    def subset(self, rows: np.ndarray) -> Source:
        return Source(
            self.images.subset(rows),
            [self.captions[int(i)] for i in rows] if self.captions is not None else None,
            self.labels[rows] if self.labels is not None else None,
            self.classes,
            self.origin,
        )


def caption_key(text: str) -> int:
    """A stable int64 per caption text: equal captions are positives of each other."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def load_source(cfg: SourceConfig) -> Source:
    """Read a dataset's metadata as described by ``cfg``."""
    if not cfg.path:
        raise ClipsearchError("no dataset path: set data.path in the recipe")
    fmt = _detect_format(cfg)
    if fmt == "folder":
        source = _load_folder(Path(cfg.path))
    elif fmt == "wds":
        source = _load_wds(_expand(cfg.path, ".tar"))
    else:
        files = _expand(cfg.path, f".{fmt}")
        source = _from_table(_read_table(files, fmt), cfg, Path(files[0]).parent, cfg.path)
    if cfg.limit and cfg.limit < len(source):
        source = source.subset(np.arange(cfg.limit))
    if len(source) == 0:
        raise ClipsearchError(f"no images with captions or labels in {cfg.path}")
    return source


def _detect_format(cfg: SourceConfig) -> str:
    if cfg.format != "auto":
        return cfg.format  # one of DATA_FORMATS: checked when the recipe was read
    path = cfg.path
    if os.path.isdir(path):
        if any(Path(path).glob("*.tar")):
            return "wds"
        return "folder"
    name = path.lower()
    for suffix, fmt in _SUFFIX_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise ClipsearchError(
        f"cannot tell the format of {path}: name a .parquet/.csv/.tsv/.jsonl file or glob, a "
        "class folder or .tar shards, or set format"
    )


def _expand(pattern: str, suffix: str) -> list[str]:
    """A file, a glob, a directory (all *suffix inside) or shard braces ``{000..009}``."""
    if os.path.isdir(pattern):
        files = sorted(str(p) for p in Path(pattern).glob(f"*{suffix}"))
    else:
        files = []
        for expanded in _braces(pattern):
            files += sorted(glob.glob(expanded)) if glob.has_magic(expanded) else [expanded]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise ClipsearchError(f"no such data file: {missing[0]}")
    if not files:
        raise ClipsearchError(f"no {suffix} files match {pattern}")
    return files


def _braces(pattern: str) -> list[str]:
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    lo, hi = match.group(1), match.group(2)
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for n in range(int(lo), int(hi) + 1) for p in _braces(f"{head}{n:0{len(lo)}d}{tail}")]


def _read_table(files: list[str], fmt: str) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        try:
            if fmt == "parquet":
                tables.append(pq.read_table(f))
            elif fmt == "jsonl":
                tables.append(pajson.read_json(f))
            else:
                delimiter = "\t" if fmt == "tsv" else ","
                opts = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
                tables.append(pacsv.read_csv(f, parse_options=opts))
        except (pa.ArrowException, OSError) as exc:
            raise ClipsearchError(f"cannot read {f}: {' '.join(str(exc).split())[:300]}") from None
    try:
        return pa.concat_tables(tables, promote_options="default")
    except pa.ArrowException as exc:
        raise ClipsearchError(f"{len(files)} data files do not share columns: {exc}") from None


def _pick(
    names: list[str], wanted: str, candidates: tuple[str, ...], what: str, origin: str
) -> str:
    if wanted:
        if wanted not in names:
            raise ClipsearchError(f"{origin} has no {what} column {wanted!r} (columns: {names})")
        return wanted
    return next((c for c in candidates if c in names), "")


def _from_table(table: Any, cfg: SourceConfig, base: Path, origin: str) -> Source:
    import pyarrow as pa
    import pyarrow.compute as pc

    names = table.column_names
    if cfg.split:
        if cfg.split_column not in names:
            raise ClipsearchError(f"{origin} has no split column {cfg.split_column!r}")
        table = table.filter(pc.equal(table[cfg.split_column], cfg.split))
    image_col = _pick(names, cfg.image_column, _IMAGE_COLUMNS, "image", origin)
    if not image_col:
        raise ClipsearchError(f"{origin}: no image column found (set image_column; {names})")
    captions = None
    if cfg.captions:
        captions = _joined_captions(table, cfg, origin)
        keep = np.array([bool(c) for c in captions], dtype=bool)
        table = table.filter(pa.array(keep))
        captions = [c for c in captions if c]
    else:
        caption_col = _pick(names, cfg.caption_column, _CAPTION_COLUMNS, "caption", origin)
        if caption_col:
            captions = [[str(c)] for c in table[caption_col].to_pylist()]
    label_col = _pick(names, cfg.label_column, () if captions else _LABEL_COLUMNS, "label", origin)
    labels, classes = (
        _labels(table[label_col].to_pylist(), cfg, origin) if label_col else (None, None)
    )
    if captions is None and labels is None:
        raise ClipsearchError(
            f"{origin}: no caption or label column (set caption_column, label_column or captions)"
        )
    column = table[image_col]
    if pa.types.is_struct(column.type):  # Hugging Face datasets' {"bytes", "path"} images
        column = pc.struct_field(column, "bytes")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        paths = [str(base / p) for p in column.to_pylist()]
        return _group_by_path(paths, captions, labels, classes, origin)
    return Source(BytesColumn(column), captions, labels, classes, origin)


def _joined_captions(table: Any, cfg: SourceConfig, origin: str) -> list[list[str]]:
    files = _expand(cfg.captions, Path(cfg.captions).suffix or ".parquet")
    fmt = _detect_format(SourceConfig(path=cfg.captions))
    captions_table = _read_table(files, fmt)
    key = cfg.key_column
    for t, where in ((table, origin), (captions_table, cfg.captions)):
        if key not in t.column_names:
            raise ClipsearchError(f"{where} has no key column {key!r} to join captions on")
    caption_col = _pick(
        captions_table.column_names, cfg.caption_column, _CAPTION_COLUMNS, "caption", cfg.captions
    )
    if not caption_col:
        raise ClipsearchError(f"{cfg.captions}: no caption column (set caption_column)")
    by_key: dict[Any, list[str]] = defaultdict(list)
    keys = captions_table[key].to_pylist()
    for k, c in zip(keys, captions_table[caption_col].to_pylist(), strict=True):
        if c:
            by_key[k].append(str(c))
    return [by_key.get(k, []) for k in table[key].to_pylist()]


def _labels(values: list[Any], cfg: SourceConfig, origin: str) -> tuple[np.ndarray, list[str]]:
    if all(isinstance(v, int) for v in values):
        if not cfg.classes:
            raise ClipsearchError(f"{origin}: integer labels need `classes` (their names)")
        bad = [v for v in values if not 0 <= v < len(cfg.classes)]
        if bad:
            raise ClipsearchError(f"{origin}: label {bad[0]} is out of range for {cfg.classes}")
        return np.asarray(values, dtype=np.int64), list(cfg.classes)
    names = [str(v) for v in values]
    classes = list(cfg.classes) or sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ClipsearchError(f"{origin}: labels {unknown[:5]} are not in classes")
    return np.asarray([index[n] for n in names], dtype=np.int64), classes


def _group_by_path(
    paths: list[str],
    captions: list[list[str]] | None,
    labels: np.ndarray | None,
    classes: list[str] | None,
    origin: str,
) -> Source:
    """Rows naming the same image file are one image with several captions."""
    first: dict[str, int] = {}
    grouped: list[list[str]] = []
    rows: list[int] = []
    for row, path in enumerate(paths):
        if path not in first:
            first[path] = len(rows)
            rows.append(row)
            grouped.append([])
        if captions is not None:
            grouped[first[path]].extend(captions[row])
    unique = [paths[r] for r in rows]
    return Source(
        PathColumn(unique),
        grouped if captions is not None else None,
        labels[np.asarray(rows)] if labels is not None else None,
        classes,
        origin,
    )


def _load_folder(root: Path) -> Source:
    """root/CLASS/.../image files; the class name is the folder name (``_`` -> space)."""
    if not root.is_dir():
        raise ClipsearchError(f"no dataset folder at {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ClipsearchError(f"{root} has no class subfolders (one folder per class)")
    paths: list[str] = []
    labels: list[int] = []
    for index, folder in enumerate(folders):
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."):
                paths.append(str(f))
                labels.append(index)
    classes = [label_of_folder(f.name) for f in folders]
    return Source(PathColumn(paths), None, np.asarray(labels, np.int64), classes, str(root))


def _load_wds(shards: list[str]) -> Source:
    """Index tar shards: each KEY with an image and a .txt caption is one sample."""
    shard_ids, offsets, sizes, captions = [], [], [], []
    for s, shard in enumerate(shards):
        try:
            with tarfile.open(shard, mode="r:") as tar:
                samples: dict[str, dict[str, Any]] = defaultdict(dict)
                for member in tar:
                    if not member.isfile():
                        continue
                    folder, _, base = member.name.rpartition("/")
                    stem, _, ext = base.partition(".")
                    sample = samples[f"{folder}/{stem}"]
                    if "." + ext.lower() in IMAGE_EXTENSIONS:
                        sample["image"] = (member.offset_data, member.size)
                    elif ext.lower() == "txt":
                        extracted = tar.extractfile(member)
                        assert extracted is not None  # member is a regular file
                        text = extracted.read().decode("utf-8", "replace")
                        sample["txt"] = " ".join(text.split())
        except tarfile.ReadError as exc:
            raise ClipsearchError(
                f"cannot read shard {shard} (uncompressed tar only): {exc}"
            ) from None
        for sample in samples.values():
            if "image" in sample and sample.get("txt"):
                shard_ids.append(s)
                offsets.append(sample["image"][0])
                sizes.append(sample["image"][1])
                captions.append([sample["txt"]])
    as_array = [np.asarray(v, np.int64) for v in (shard_ids, offsets, sizes)]
    images = TarColumn(shards, *as_array)
    return Source(images, captions, None, None, shards[0] if len(shards) == 1 else shards[0] + "…")
