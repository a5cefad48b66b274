"""Tests for clipsearch.ingest.scan on real files and folders in tmp_path (no mocks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.ingest.scan import IMAGE_EXTENSIONS, FileEntry, ScanOptions, ScanProblem, scan

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks here")
case_sensitive_fs_names = os.path.normcase("A") == "A"


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_tree(root: Path, names: list[str]) -> Path:
    """Create empty files (or folders, for names ending in '/') under root."""
    for name in names:
        if name.endswith("/"):
            (root / name).mkdir(parents=True, exist_ok=True)
        else:
            touch(root / name)
    return root


def rel(entries: list[FileEntry], base: Path) -> list[str]:
    return [Path(e.path).relative_to(base).as_posix() for e in entries]


def run(roots: list[Path | str], **opts: object) -> tuple[list[FileEntry], list[ScanProblem]]:
    problems: list[ScanProblem] = []
    entries = list(scan(roots, ScanOptions(**opts), problems.append))  # type: ignore[arg-type]
    return entries, problems


# --- walking and filtering ---------------------------------------------------------------


def test_nested_folders_depth_first_in_name_order(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "photos",
        ["b.jpg", "a/z.png", "a/deep/er/x.gif", "c/", "a.jpg", "a/m/n.webp", "b/y.jpeg"],
    )
    entries, problems = run([root])
    # Files and folders share one sorted order per folder: 'a' < 'a.jpg' < 'b' < 'b.jpg'.
    assert rel(entries, root) == [
        "a/deep/er/x.gif",
        "a/m/n.webp",
        "a/z.png",
        "a.jpg",
        "b/y.jpeg",
        "b.jpg",
    ]
    assert problems == []
    assert all(os.path.isabs(e.path) for e in entries)


def test_default_options_and_pathlike_and_str_roots(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a.jpg", "sub/b.png"])
    assert [e.path for e in scan([tmp_path])] == [e.path for e in scan([str(tmp_path)])]
    assert len(list(scan([tmp_path]))) == 2


def test_extension_match_is_case_insensitive(tmp_path: Path) -> None:
    make_tree(tmp_path, ["PHOTO.JPG", "b.Png", "c.TiFF", "d.HEIC", "e.jpeg"])
    entries, _ = run([tmp_path])
    assert rel(entries, tmp_path) == ["PHOTO.JPG", "b.Png", "c.TiFF", "d.HEIC", "e.jpeg"]


def test_other_extensions_are_skipped_silently(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        ["notes.txt", "README", "a.jpg.bak", "clip.mp4", "raw.CR2", "x.", "jpg", "keep.png"],
    )
    entries, problems = run([tmp_path])
    assert rel(entries, tmp_path) == ["keep.png"]
    assert problems == []


def test_text_file_named_jpg_is_yielded(tmp_path: Path) -> None:
    # The scan never opens files; the decoder rejects this one later.
    touch(tmp_path / "fake.jpg", b"just some text, not a JPEG\n")
    entries, _ = run([tmp_path])
    assert rel(entries, tmp_path) == ["fake.jpg"]


def test_image_extensions_are_lowercase_and_dotted() -> None:
    for ext in (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tiff", ".webp", ".heic", ".avif"):
        assert ext in IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)


def test_custom_extensions_are_normalised(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a.jpg", "b.PNG", "c.gif"])
    entries, _ = run([tmp_path], extensions=frozenset({"png", ".GIF"}))
    assert rel(entries, tmp_path) == ["b.PNG", "c.gif"]


def test_special_files_are_skipped(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    touch(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    entries, problems = run([tmp_path])
    assert rel(entries, tmp_path) == ["a.jpg"]
    assert problems == []


# --- hidden files ------------------------------------------------------------------------


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path, [".hidden.jpg", ".cache/x.jpg", "a/.thumbs/y.jpg", "a/ok.jpg", ".jpg"])
    entries, _ = run([tmp_path])
    assert rel(entries, tmp_path) == ["a/ok.jpg"]


def test_hidden_files_and_folders_included_with_flag(tmp_path: Path) -> None:
    make_tree(tmp_path, [".hidden.jpg", ".cache/x.jpg", "a/.thumbs/y.jpg", "a/ok.jpg"])
    entries, _ = run([tmp_path], include_hidden=True)
    assert rel(entries, tmp_path) == [".cache/x.jpg", ".hidden.jpg", "a/.thumbs/y.jpg", "a/ok.jpg"]


def test_hidden_root_is_walked(tmp_path: Path) -> None:
    root = make_tree(tmp_path / ".photos", ["a.jpg", ".inner/b.jpg", "sub/c.jpg"])
    hidden_file = touch(tmp_path / ".secret.png")
    entries, _ = run([root, hidden_file])
    # The named root and file are used; hidden things inside the root still are not.
    assert rel(entries, tmp_path) == [".photos/a.jpg", ".photos/sub/c.jpg", ".secret.png"]


# --- exclude globs -----------------------------------------------------------------------


@pytest.fixture
def exclude_tree(tmp_path: Path) -> Path:
    return make_tree(
        tmp_path / "lib",
        [
            "a.jpg",
            "a.png",
            "thumbs/t.jpg",
            "trip/thumbs/t2.jpg",
            "trip/b.jpg",
            "trip/b.png",
            "raw/r.jpg",
            "raw/deeper/r2.jpg",
            "trip/raw/kept.jpg",
            "cache/c0.jpg",
            "trip/cache/c1.jpg",
            "trip/x/cache/c2.jpg",
        ],
    )


ALL_EXCLUDE_TREE = [
    "a.jpg",
    "a.png",
    "cache/c0.jpg",
    "raw/deeper/r2.jpg",
    "raw/r.jpg",
    "thumbs/t.jpg",
    "trip/b.jpg",
    "trip/b.png",
    "trip/cache/c1.jpg",
    "trip/raw/kept.jpg",
    "trip/thumbs/t2.jpg",
    "trip/x/cache/c2.jpg",
]


@pytest.mark.parametrize(
    ("pattern", "gone"),
    [
        ("*.png", {"a.png", "trip/b.png"}),
        ("thumbs", {"thumbs/t.jpg", "trip/thumbs/t2.jpg"}),
        ("raw/*", {"raw/r.jpg", "raw/deeper/r2.jpg"}),  # relative to the root: not trip/raw
        # Matched against the absolute path too, so a top-level cache/ goes as well.
        ("*/cache/*", {"cache/c0.jpg", "trip/cache/c1.jpg", "trip/x/cache/c2.jpg"}),
        ("trip/x", {"trip/x/cache/c2.jpg"}),
        ("b.*", {"trip/b.jpg", "trip/b.png"}),
    ],
)
def test_exclude_forms(exclude_tree: Path, pattern: str, gone: set[str]) -> None:
    entries, problems = run([exclude_tree], exclude=(pattern,))
    assert rel(entries, exclude_tree) == [p for p in ALL_EXCLUDE_TREE if p not in gone]
    assert problems == []


def test_exclude_absolute_path_and_several_patterns(exclude_tree: Path) -> None:
    entries, _ = run([exclude_tree], exclude=[str(exclude_tree / "trip"), "*.png", "cache"])
    assert rel(entries, exclude_tree) == ["a.jpg", "raw/deeper/r2.jpg", "raw/r.jpg", "thumbs/t.jpg"]


@pytest.mark.skipif(not case_sensitive_fs_names, reason="globs are case-insensitive here")
def test_exclude_is_case_sensitive(exclude_tree: Path) -> None:
    entries, _ = run([exclude_tree], exclude=("*.PNG", "THUMBS"))
    assert rel(entries, exclude_tree) == ALL_EXCLUDE_TREE


@needs_symlinks
@pytest.mark.parametrize("pattern", ["thumbs", "raw/*", "*/thumbs/*", "*/thumbs"])
def test_excluded_folders_are_pruned(tmp_path: Path, pattern: str) -> None:
    root = make_tree(tmp_path / "lib", ["a.jpg", "raw/"])
    (root / "thumbs").mkdir()
    # Broken links are reported only when reached: a report proves the folder was read.
    os.symlink(tmp_path / "missing", root / "thumbs" / "broken.jpg")
    os.symlink(tmp_path / "missing", root / "raw" / "broken.jpg")
    entries, problems = run([root], exclude=(pattern,), follow_symlinks=True)
    assert rel(entries, root) == ["a.jpg"]
    reached = {Path(p.path).parent.name for p in problems}
    assert reached == ({"thumbs", "raw"} - {pattern.strip("*/")})


def test_exclude_applies_to_named_roots(tmp_path: Path) -> None:
    # `clipsearch index photos/* --exclude '*.png'` has the shell name each file.
    a = touch(tmp_path / "a.jpg")
    b = touch(tmp_path / "b.png")
    sub = make_tree(tmp_path / "thumbs", ["t.jpg"])
    entries, _ = run([a, b, sub], exclude=("*.png", "thumbs"))
    assert rel(entries, tmp_path) == ["a.jpg"]


# --- symlinks ----------------------------------------------------------------------------


@pytest.fixture
def link_tree(tmp_path: Path) -> Path:
    outside = make_tree(tmp_path / "outside", ["o1.jpg", "sub/o2.png"])
    root = make_tree(tmp_path / "lib", ["real.jpg"])
    os.symlink(outside / "o1.jpg", root / "link.jpg")
    os.symlink(outside, root / "album", target_is_directory=True)
    return root


@needs_symlinks
def test_symlinks_skipped_by_default(link_tree: Path) -> None:
    entries, problems = run([link_tree])
    assert rel(entries, link_tree) == ["real.jpg"]
    assert problems == []


@needs_symlinks
def test_symlinks_followed_with_flag_keep_link_path(link_tree: Path) -> None:
    entries, problems = run([link_tree], follow_symlinks=True)
    assert rel(entries, link_tree) == ["album/o1.jpg", "album/sub/o2.png", "link.jpg", "real.jpg"]
    assert problems == []
    link = entries[2]
    target = os.stat(link_tree / "link.jpg")
    assert (link.size, link.mtime_ns) == (target.st_size, target.st_mtime_ns)


@needs_symlinks
def test_same_file_through_two_paths_is_yielded_under_each(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib", ["photos/p.jpg"])
    os.symlink(root / "photos", root / "album", target_is_directory=True)
    entries, problems = run([root], follow_symlinks=True)
    assert rel(entries, root) == ["album/p.jpg", "photos/p.jpg"]
    assert problems == []


@needs_symlinks
def test_symlink_loop_terminates_and_is_reported_once(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib", ["top.jpg", "a/x.jpg"])
    os.symlink("..", root / "a" / "loop", target_is_directory=True)
    os.symlink(".", root / "a" / "self", target_is_directory=True)
    os.symlink("me.jpg", root / "me.jpg")  # a link to itself: ELOOP on stat
    entries, problems = run([root], follow_symlinks=True)
    assert rel(entries, root) == ["a/x.jpg", "top.jpg"]
    assert sorted((Path(p.path).relative_to(root).as_posix(), p.reason) for p in problems) == [
        ("a/loop", "symlink loop"),
        ("a/self", "symlink loop"),
        ("me.jpg", "symlink loop"),
    ]


@needs_symlinks
def test_mutual_symlink_loop_terminates(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib", ["a/a.jpg", "b/b.jpg"])
    os.symlink(root / "b", root / "a" / "to_b", target_is_directory=True)
    os.symlink(root / "a", root / "b" / "to_a", target_is_directory=True)
    entries, problems = run([root], follow_symlinks=True)
    assert rel(entries, root) == ["a/a.jpg", "a/to_b/b.jpg", "b/b.jpg", "b/to_a/a.jpg"]
    assert {p.reason for p in problems} == {"symlink loop"}
    assert len(problems) == 2


@needs_symlinks
def test_broken_symlink_reported_when_following(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib", ["ok.jpg"])
    os.symlink(tmp_path / "gone.jpg", root / "dead.jpg")
    entries, problems = run([root], follow_symlinks=True)
    assert rel(entries, root) == ["ok.jpg"]
    assert problems == [ScanProblem(str(root / "dead.jpg"), "broken symlink")]
    # Not following, links are not looked at, broken or not.
    assert run([root]) == (entries, [])


# --- problems and errors -----------------------------------------------------------------


def test_names_that_are_not_utf8_are_problems_not_crashes(tmp_path: Path) -> None:
    # Old Linux disks, Samba shares, unpacked Windows archives: names in Latin-1 and such.
    # The catalog keeps paths as UTF-8 text, so such a file is reported, not indexed.
    root = make_tree(tmp_path / "lib", ["ok.jpg", "z/z.jpg"])
    raw = os.fsencode(root)
    touch(Path(os.fsdecode(raw + b"/caf\xe9.jpg")))
    os.mkdir(raw + b"/\xe9t\xe9")
    touch(Path(os.fsdecode(raw + b"/\xe9t\xe9/inside.jpg")))
    entries, problems = run([root])
    assert rel(entries, root) == ["ok.jpg", "z/z.jpg"]
    assert problems == [
        ScanProblem(f"{root}/caf\\xe9.jpg", "file name is not UTF-8: rename it"),
        ScanProblem(f"{root}/\\xe9t\\xe9", "folder name is not UTF-8: rename it"),
    ]
    with pytest.raises(ClipsearchError, match=r"et\\xe9: the path is not UTF-8"):
        scan([os.fsdecode(os.fsencode(tmp_path) + b"/et\xe9")])


def test_missing_root_raises_before_anything_is_yielded(tmp_path: Path) -> None:
    good = make_tree(tmp_path / "good", ["a.jpg"])
    missing = tmp_path / "nope"
    with pytest.raises(ClipsearchError, match=r"no such file or directory: .*nope"):
        scan([good, missing])  # raised by the call itself, not on first next()
    got: list[FileEntry] = []
    with pytest.raises(ClipsearchError) as info:
        got.extend(scan([good, missing]))
    assert got == []
    assert str(info.value) == f"no such file or directory: {missing}"


@needs_symlinks
def test_broken_symlink_root_counts_as_missing(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone", tmp_path / "dead")
    with pytest.raises(ClipsearchError, match="no such file or directory"):
        scan([tmp_path / "dead"])


def test_without_callback_problems_are_ignored(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a.jpg"])
    if hasattr(os, "symlink"):
        os.symlink(tmp_path / "gone.jpg", tmp_path / "dead.jpg")
    assert len(list(scan([tmp_path], ScanOptions(follow_symlinks=True)))) == 1


# --- roots -------------------------------------------------------------------------------


def test_single_file_root_is_yielded_whatever_its_extension(tmp_path: Path) -> None:
    make_tree(tmp_path, ["notes.txt", "pic.jpg"])
    entries, _ = run([tmp_path / "notes.txt", tmp_path / "pic.jpg"])
    assert [e.path for e in entries] == [str(tmp_path / "notes.txt"), str(tmp_path / "pic.jpg")]


def test_roots_in_given_order_and_duplicates_yielded_once(tmp_path: Path) -> None:
    make_tree(tmp_path, ["b/b1.jpg", "b/sub/b2.jpg", "a/a1.jpg"])
    roots: list[Path | str] = [
        tmp_path / "b",
        tmp_path / "a",
        tmp_path / "b" / "sub",  # already covered by b
        tmp_path / "a" / "a1.jpg",  # already covered by a
        str(tmp_path / "a") + "/",  # same folder, spelled differently
        tmp_path / "b" / "sub" / ".." / "b1.jpg",
    ]
    entries, _ = run(roots)
    assert rel(entries, tmp_path) == ["b/b1.jpg", "b/sub/b2.jpg", "a/a1.jpg"]


def test_relative_root_gives_absolute_normalised_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path, ["photos/sub/a.jpg"])
    monkeypatch.chdir(tmp_path)
    entries, _ = run(["./photos/../photos/"])
    assert [e.path for e in entries] == [os.path.join(str(tmp_path), "photos", "sub", "a.jpg")]


def test_order_is_deterministic(tmp_path: Path) -> None:
    names = [f"d{i % 7}/f{(i * 37) % 101:03d}.jpg" for i in range(101)]
    make_tree(tmp_path, names)
    first = [e.path for e in scan([tmp_path])]
    assert first == [e.path for e in scan([tmp_path])]
    assert rel([FileEntry(p, 0, 0) for p in first], tmp_path) == sorted(names)


def test_unicode_spaces_and_newlines_in_names(tmp_path: Path) -> None:
    names = ["été/café au lait.jpg", "日本/写真 1.png", "with\nnewline.jpg", "a b/ c .gif"]
    make_tree(tmp_path, names)
    entries, problems = run([tmp_path])
    assert sorted(rel(entries, tmp_path)) == sorted(names)
    assert problems == []


def test_deeply_nested_folders(tmp_path: Path) -> None:
    # Deeper than Python's default recursion limit (1000): the walk must not recurse.
    # Built and removed level by level: pathlib, os.makedirs and (before 3.13)
    # shutil.rmtree recurse themselves.
    levels = [tmp_path]
    for _ in range(1100):
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
    bottom = touch(levels[-1] / "bottom.jpg")
    try:
        entries, problems = run([tmp_path])
        assert [e.path for e in entries] == [str(bottom)]
        assert problems == []
    finally:
        bottom.unlink()
        for level in reversed(levels[1:]):
            level.rmdir()


def test_size_and_mtime_match_os_stat(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.jpg", b"x" * 1234)
    b = touch(tmp_path / "sub" / "b.png", b"")
    os.utime(a, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    entries, _ = run([tmp_path, b])
    for entry, path in zip(entries, [a, b], strict=True):
        st = os.stat(path)
        assert entry == FileEntry(str(path), st.st_size, st.st_mtime_ns)
    assert entries[0].size == 1234


def test_options_and_entries_are_immutable() -> None:
    opts = ScanOptions(exclude=["*.png"])  # type: ignore[arg-type]
    assert opts.exclude == ("*.png",)
    assert ScanOptions().extensions == IMAGE_EXTENSIONS
    with pytest.raises(AttributeError):
        opts.include_hidden = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        FileEntry("/x.jpg", 1, 2).size = 3  # type: ignore[misc]


def test_scan_module_imports_no_heavy_dependencies() -> None:
    code = (
        "import sys, clipsearch.ingest.scan; "
        "heavy = {'PIL', 'torch', 'numpy', 'open_clip'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# --- depth and breadth -------------------------------------------------------------------------


def test_scans_2000_files_in_20_nested_folders(tmp_path: Path) -> None:
    folder = tmp_path
    for level in range(20):
        folder = folder / f"level{level:02d}"
        folder.mkdir()
        for i in range(100):
            (folder / f"img{i:03d}.jpg").touch()
    entries = list(scan([tmp_path]))
    assert len(entries) == 2000
    assert len({e.path for e in entries}) == 2000
