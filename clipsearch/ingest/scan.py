"""Find candidate image files under the paths given to ``clipsearch index``.

This is the first, cheapest stage of indexing: it lists directories and stats
files, nothing more. A no-op re-index diffs this listing (path, size, mtime)
against the catalog, so it must stay fast: one ``scandir`` per directory, one
``stat`` per candidate file, and no file is ever opened. Stdlib only.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import translate
from pathlib import Path

from clipsearch.base.durable import read_json_object
from clipsearch.errors import ClipsearchError
from clipsearch.store.layout import MANIFEST_NAME

__all__ = ["IMAGE_EXTENSIONS", "FileEntry", "ScanOptions", "ScanProblem", "scan"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".heic",
        ".heif",
        ".avif",
        ".ppm",
        ".pgm",
        ".pbm",
        ".tga",
        ".ico",
    }
)


@dataclass(frozen=True)
class FileEntry:
    """A candidate image file: absolute path (symlinks not resolved), size, mtime."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanOptions:
    """What to skip while walking; the defaults match ``clipsearch index`` without flags."""

    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    follow_symlinks: bool = False
    extensions: frozenset[str] = field(default=IMAGE_EXTENSIONS)

    def __post_init__(self) -> None:
        # Accept a list of globs or 'JPG'-style extensions from callers; matching
        # below relies on a tuple and on lowercase, dotted extensions.
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(
            self,
            "extensions",
            frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in self.extensions),
        )


@dataclass
class ScanProblem:
    """Something the scan skipped that the user may want to hear about."""

    path: str
    reason: str


_Report = Callable[[ScanProblem], None]


def scan(
    roots: Iterable[str | os.PathLike[str]],
    options: ScanOptions | None = None,
    on_problem: Callable[[ScanProblem], None] | None = None,
) -> Iterator[FileEntry]:
    """Yield the image files under ``roots``, depth-first in name order, each path once.

    Every root is checked before anything is yielded, so a typo in the last
    root fails the command up front; a missing root raises ClipsearchError.
    Unreadable folders, broken symlinks and symlink loops are passed to
    ``on_problem`` (or ignored without one) and the scan carries on.
    """
    opts = options if options is not None else ScanOptions()
    report: _Report = on_problem if on_problem is not None else _ignore
    # Eager, not a generator function: the error must come from the call itself,
    # before the caller has started consuming (and acting on) any entry.
    checked = [_check_root(root, report) for root in roots]
    return _scan_checked(checked, opts, report)


def _ignore(problem: ScanProblem) -> None:
    pass


@dataclass(frozen=True)
class _Root:
    path: str
    st: os.stat_result | None  # None: exists but could not be stat'ed (already reported)


def _check_root(root: str | os.PathLike[str], report: _Report) -> _Root:
    given = os.fsdecode(os.fspath(root))
    path = os.path.abspath(given)
    if not_utf8(path):
        raise ClipsearchError(
            f"{printable(path)}: the path is not UTF-8, which an index cannot keep; rename it"
        )
    try:
        # Follows symlinks: a root the user named is used whatever it points to.
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ClipsearchError(f"no such file or directory: {given}") from None
    except OSError as exc:
        # The root exists (or is a looping link); it is a problem to report,
        # not a typo to stop for.
        report(ScanProblem(path, _reason(exc)))
        return _Root(path, None)
    return _Root(path, st)


def _scan_checked(roots: list[_Root], opts: ScanOptions, report: _Report) -> Iterator[FileEntry]:
    excluded = _exclude_matcher(opts.exclude)
    seen_files: set[str] = set()
    seen_roots: set[str] = set()
    for root in roots:
        if root.st is None or root.path in seen_roots:
            continue
        seen_roots.add(root.path)
        is_dir = stat.S_ISDIR(root.st.st_mode)
        # Roots skip the hidden and extension filters (the user named them) but
        # not the exclude globs, so excluding '*.png' from `index photos/*` does what it says.
        if excluded(os.path.basename(root.path), None, root.path, is_dir):
            continue
        if is_dir:
            for entry in _walk(root.path, root.st, opts, excluded, report):
                if entry.path not in seen_files:
                    seen_files.add(entry.path)
                    yield entry
        elif stat.S_ISREG(root.st.st_mode):
            if root.path not in seen_files:
                seen_files.add(root.path)
                yield FileEntry(root.path, root.st.st_size, root.st.st_mtime_ns)
        else:
            report(ScanProblem(root.path, "not a regular file"))


_Excluded = Callable[[str, str | None, str, bool], bool]


def _exclude_matcher(patterns: tuple[str, ...]) -> _Excluded:
    # Compile once: the matcher runs for every entry of every folder.
    flags = re.IGNORECASE if os.path.normcase("A") == "a" else 0
    compiled = [re.compile(translate(p), flags).match for p in patterns]

    def excluded(name: str, rel: str | None, path: str, is_dir: bool) -> bool:
        if not compiled:
            return False
        candidates = [name, path]
        if rel is not None:
            candidates.append(rel)
        if is_dir:
            # 'raw/*' and '*/cache/*' match 'raw/' and 'a/cache/': everything
            # below would be excluded anyway, so prune the folder unread.
            candidates.extend([path + "/", rel + "/"] if rel is not None else [path + "/"])
        return any(match(c) for match in compiled for c in candidates)

    return excluded


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return (exc.strerror or str(exc)).lower()


def not_utf8(name: str) -> bool:
    """Whether a name from the filesystem holds bytes that are not UTF-8 (Python gives them as
    surrogate escapes): the catalog keeps paths as UTF-8 text, so such a file cannot be kept."""
    if name.isascii():
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(path: str) -> str:
    """A path with its non-UTF-8 bytes written as \\xNN: storable, and the same every run."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_an_index(folder: str, children: list[os.DirEntry[str]]) -> bool:
    """Whether a folder is a clipsearch index (``clipsearch index .`` puts one under the
    photos): its thumbnail cache is no photos to index."""
    names = {child.name for child in children}
    if MANIFEST_NAME not in names or "catalog" not in names:
        return False
    try:
        manifest = read_json_object(Path(folder, MANIFEST_NAME))
    except ClipsearchError:  # unreadable or not JSON: not an index of ours
        return False
    return manifest is not None and {"embedding_dim", "catalog"} <= manifest.keys()


def _list_dir(path: str, report: _Report) -> list[os.DirEntry[str]] | None:
    """Return the folder's entries sorted by name, or None if it cannot be read."""
    try:
        # Read the whole folder and close it now: no descriptor stays open while
        # the caller works on a yielded entry, however deep the tree.
        with os.scandir(path) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return None  # removed or replaced since it was listed: nothing to index
    except OSError as exc:
        report(ScanProblem(path, _reason(exc)))
        return None
    entries.sort(key=lambda e: e.name)
    return entries


def _walk(
    root: str,
    root_st: os.stat_result,
    opts: ScanOptions,
    excluded: _Excluded,
    report: _Report,
) -> Iterator[FileEntry]:
    """Depth-first walk of one root folder with an explicit stack (no recursion limit)."""
    entries = _list_dir(root, report)
    if entries is None:
        return
    root_id = (root_st.st_dev, root_st.st_ino)
    # Folders on the current descent path: a folder that is its own ancestor is a
    # loop. Only ancestors, not all visited folders, so a folder reached through
    # two symlinks is still listed under both paths.
    ancestors = {root_id}
    stack: list[tuple[Iterator[os.DirEntry[str]], str, tuple[int, int]]] = [
        (iter(entries), "", root_id)
    ]
    follow = opts.follow_symlinks
    extensions = opts.extensions
    include_hidden = opts.include_hidden

    while stack:
        it, prefix, dir_id = stack[-1]
        entry = next(it, None)
        if entry is None:
            stack.pop()
            ancestors.discard(dir_id)
            continue

        name = entry.name
        if not include_hidden and name.startswith("."):
            continue
        try:
            is_link = entry.is_symlink()
        except OSError:
            continue
        if is_link and not follow:
            continue

        st: os.stat_result | None = None
        if is_link:
            try:
                st = entry.stat()
            except FileNotFoundError:
                report(ScanProblem(entry.path, "broken symlink"))
                continue
            except OSError as exc:
                report(ScanProblem(entry.path, _reason(exc)))
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if not is_dir and not stat.S_ISREG(st.st_mode):
                continue
        else:
            try:
                # Free on Linux and macOS: the type comes with the listing.
                is_dir = entry.is_dir(follow_symlinks=False)
                if not is_dir and not entry.is_file(follow_symlinks=False):
                    continue  # fifo, socket, device: never an image
            except OSError:
                continue

        if not is_dir:
            dot = name.rfind(".")
            if dot < 0 or name[dot:].lower() not in extensions:
                continue
        rel = prefix + name
        if excluded(name, rel, entry.path, is_dir):
            continue

        if not_utf8(name):
            what = "folder" if is_dir else "file"
            report(ScanProblem(printable(entry.path), f"{what} name is not UTF-8: rename it"))
            continue

        if is_dir:
            try:
                if st is None:
                    st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished since the listing
            child_id = (st.st_dev, st.st_ino)
            if child_id in ancestors:
                reason = "symlink loop" if follow else "filesystem loop"
                report(ScanProblem(entry.path, reason))
                continue
            children = _list_dir(entry.path, report)
            if children is None or _is_an_index(entry.path, children):
                continue
            ancestors.add(child_id)
            stack.append((iter(children), rel + "/", child_id))
            continue

        if st is None:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted between the listing and the stat
            except OSError as exc:
                report(ScanProblem(entry.path, _reason(exc)))
                continue
        yield FileEntry(entry.path, st.st_size, st.st_mtime_ns)
