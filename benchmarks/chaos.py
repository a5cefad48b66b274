"""Chaos: kill -9 `clipsearch index` at random moments while readers query; count what breaks.

    python benchmarks/chaos.py [--kills 50] [--images 120] [--seed 0] [--no-serve]

An index of N small photos is built once. Then, each round, the photo folder changes a
little (files added, removed, rewritten, moved), `clipsearch index` starts in its own
process group (2 decode workers, a staged part every 8 images) and is killed with SIGKILL
after a random delay, anywhere from start-up through scanning, embedding, staging and the
commit. After each kill the script counts the processes of that group still alive 5 s later
(orphans) and whether the next writer is refused (lock-outs). Readers run all along: the
Python API (a fresh `Index` per query and a long-lived one that refreshes), `clipsearch
query` processes, and a `clipsearch serve` over HTTP; any error of theirs is counted. Last,
--commits rounds run unkilled, each committing a change while the readers go on, and the
final index must hold every file of the folder exactly once, with unique ids (files never
touched keep their first ids), a vector per row, no staging and no file no snapshot names.

The last line printed is one JSON object: kills, where they landed, orphans, lockouts,
reader queries and errors per reader, and whether the final catalog is exact. Goal (issue
17): 0 orphans, 0 lock-outs, 0 reader errors, exact final catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

MODEL = "random:clipsearch-tiny"
CLI = [sys.executable, "-m", "clipsearch"]


def write_photo(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scene = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    scene.resize((320, 240), Image.Resampling.BILINEAR).save(path, compress_level=1)


def change_folder(folder: Path, rng: random.Random, next_seed: int, touched: set[str]) -> int:
    """Add, remove, rewrite and move a few files, as a user's photo folder changes; the paths
    removed, rewritten or moved away are added to ``touched``."""
    files = sorted(folder.glob("*.png"))
    for path in rng.sample(files, min(3, len(files))):
        touched.add(str(path))
        path.unlink()
    files = sorted(folder.glob("*.png"))
    for path in rng.sample(files, min(2, len(files))):
        touched.add(str(path))
        write_photo(path, next_seed)  # changed in place
        next_seed += 1
    files = sorted(folder.glob("*.png"))
    for path in rng.sample(files, min(2, len(files))):
        touched.add(str(path))
        path.rename(path.with_name(f"moved-{next_seed}-{path.name}"))
        next_seed += 1
    for _ in range(40):
        write_photo(folder / f"new-{next_seed}.png", next_seed)
        next_seed += 1
    return next_seed


def group_members(group: int) -> set[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            members.add(int(entry.name))
    return members


def snapshot_files(index_dir: Path) -> set[Path]:
    """The catalog parts and vector files in the index folder, named by a manifest or not,
    and the new files a writer keeps in pending/ until its commit."""
    return {
        *index_dir.glob("catalog/*.parquet"),
        *index_dir.glob("vectors/*.faiss"),
        *(p for p in index_dir.glob("pending/**/*") if p.is_file()),
    }


def index_command(folder: Path, index_dir: Path) -> list[str]:
    options = ["--workers", "2", "--batch-size", "8", "--checkpoint-every", "8"]
    return [*CLI, "index", str(folder), "--index", str(index_dir), *options]


class Readers:
    """API, CLI and HTTP readers querying in loops until stopped; they count their errors."""

    def __init__(self, index_dir: Path, serve: bool) -> None:
        self.index_dir = index_dir
        self.stop = threading.Event()
        self.queries: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.examples: list[str] = []
        self.server: subprocess.Popen | None = None
        self.threads = [threading.Thread(target=self.api), threading.Thread(target=self.cli)]
        if serve:
            serve_command = ["serve", "--index", str(index_dir), "--port", "0"]
            self.server = subprocess.Popen(
                [*CLI, *serve_command, "--log-level", "warning"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.threads.append(threading.Thread(target=self.http))

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=30)

    def failed(self, reader: str, what: str) -> None:
        self.errors[reader] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{reader}: {what}"[:300])

    def api(self) -> None:
        from clipsearch.query.search import Index

        query = np.ones(128, np.float32)
        live = Index.open(self.index_dir)
        while not self.stop.is_set():
            try:
                Index.open(self.index_dir).search(query, k=5, columns=["width"])
                live.refresh()
                live.search(query, k=5)
                self.queries["api"] += 1
            except Exception as exc:
                self.failed("api", f"{type(exc).__name__}: {exc}")

    def cli(self) -> None:
        env = {**os.environ, "CLIPSEARCH_WARM": "0"}
        command = [*CLI, "query", "a photo", "--index", str(self.index_dir), "--local", "-k", "3"]
        while not self.stop.is_set():
            result = subprocess.run(command, capture_output=True, text=True, env=env)
            self.queries["cli"] += 1
            if result.returncode != 0:
                self.failed("cli", result.stderr.strip())

    def http(self) -> None:
        url = token = None
        while url is None and not self.stop.is_set():  # server.json appears once it listens
            try:
                announced = json.loads((self.index_dir / "server.json").read_text())
                url, token = announced["url"], announced["token"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        signed_in = {"Authorization": f"Bearer {token}"}
        while not self.stop.is_set():
            request = urllib.request.Request(f"{url}/api/search?q=a+photo&k=3", headers=signed_in)
            try:
                with opener.open(request, timeout=30) as response:
                    json.loads(response.read())
                self.queries["serve"] += 1
            except Exception as exc:
                self.queries["serve"] += 1
                self.failed("serve", f"{type(exc).__name__}: {exc}")


def catalog_ids(index_dir: Path) -> dict[str, int]:
    """path → id of every row of the committed catalog."""
    from clipsearch.store import catalog
    from clipsearch.store.manifest import read_manifest

    manifest = read_manifest(index_dir)
    schema = catalog.catalog_schema(manifest.embedding_dim, manifest.embedding_dtype)
    rows = catalog.read_tables(index_dir, manifest.catalog, ["id", "path"], schema).to_pylist()
    assert len({r["path"] for r in rows}) == len(rows), "a file is in the catalog twice"
    return {r["path"]: r["id"] for r in rows}


def final_check(
    folder: Path, index_dir: Path, first_ids: dict[str, int], touched: set[str]
) -> dict:
    from clipsearch.store import layout, vectors
    from clipsearch.store.manifest import read_manifest
    from clipsearch.store.storage import kept_files

    manifest = read_manifest(index_dir)
    ids = catalog_ids(index_dir)
    on_disk = sorted(str(p) for p in folder.glob("*.png"))
    index = vectors.load(index_dir / manifest.vector_index.file)
    kept = kept_files(manifest)
    unnamed = [
        f"{d}/{p.name}"
        for d in layout.SNAPSHOT_DIRS
        if (index_dir / d).is_dir()
        for p in (index_dir / d).iterdir()
        if f"{d}/{p.name}" not in kept
    ]
    unnamed += [
        p.relative_to(index_dir).as_posix()
        for p in (index_dir / layout.PENDING_DIR).rglob("*")
        if p.is_file()
    ]
    # Files never touched since the first run keep the ids they got then.
    stable = all(ids.get(path) == i for path, i in first_ids.items() if path not in touched)
    return {
        "exact": sorted(ids) == on_disk
        and len(set(ids.values())) == len(ids)
        and index.ntotal == len(ids) == manifest.counts["images"]
        and not (index_dir / layout.STAGING_DIR).exists()
        and not unnamed
        and stable,
        "images": len(ids),
        "files": len(on_disk),
        "ids_stable": stable,
        "unnamed_files": unnamed[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--commits", type=int, default=10, help="unkilled re-commits last")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-serve", action="store_true", help="no HTTP reader")
    args = parser.parse_args()
    if args.commits < 1:
        parser.error("--commits must be at least 1: the last run is the one checked")
    if sys.platform != "linux":
        sys.exit("needs Linux (/proc, process groups)")
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="clipsearch-chaos-"))
    folder, index_dir = work / "photos", work / "index"
    folder.mkdir()
    for i in range(args.images):
        write_photo(folder / f"{i:04d}.png", i)
    next_seed = args.images
    start = time.perf_counter()
    subprocess.run([*index_command(folder, index_dir), "-m", MODEL], check=True)
    first_ids, touched = catalog_ids(index_dir), set()
    landed: Counter[str] = Counter()
    orphans = lockouts = with_workers = 0
    with Readers(index_dir, serve=not args.no_serve) as readers:
        # How long one round takes with the readers running: the kills spread over it.
        next_seed = change_folder(folder, rng, next_seed, touched)
        round_start = time.perf_counter()
        subprocess.run(index_command(folder, index_dir), check=True, capture_output=True)
        one_round = time.perf_counter() - round_start
        print(f"one round of re-indexing takes {one_round:.2f} s here", file=sys.stderr)
        for _ in range(args.kills):
            next_seed = change_folder(folder, rng, next_seed, touched)
            before = json.loads((index_dir / "manifest.json").read_text())["snapshot"]
            staging = index_dir / "staging"
            staged_before = set(staging.glob("part-*.parquet"))  # left by the last kill
            written_before = snapshot_files(index_dir)
            process = subprocess.Popen(
                index_command(folder, index_dir),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            group = process.pid
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0.0, one_round))  # anywhere, start-up included
            else:  # once this run staged rows: late in embedding, or in the commit
                while process.poll() is None and set(staging.glob("part-*.parquet")) <= (
                    staged_before
                ):
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.4))
            with_workers += len(group_members(group) - {process.pid}) > 0
            process.send_signal(signal.SIGKILL)
            _, stderr = process.communicate()
            if process.returncode != -signal.SIGKILL:  # it had ended by itself
                if "being updated by another" in stderr:
                    lockouts += 1
                elif process.returncode != 0:
                    readers.failed("index", stderr.strip())
                landed["finished before the kill"] += 1
            else:
                after = json.loads((index_dir / "manifest.json").read_text())["snapshot"]
                staged = set(staging.glob("part-*.parquet")) - staged_before
                if after != before:
                    phase = "after the commit"
                elif snapshot_files(index_dir) - written_before:
                    phase = "in the commit, before the manifest"
                else:
                    phase = "while staging" if staged else "before any staged row"
                landed[phase] += 1
            deadline = time.monotonic() + 5
            while group_members(group) and time.monotonic() < deadline:
                time.sleep(0.05)
            orphans += len(group_members(group))
        # Then consecutive re-commits, none killed, the readers still querying; the last one
        # is the final run checked below.
        first_commit = json.loads((index_dir / "manifest.json").read_text())["snapshot"]
        for _ in range(args.commits):
            next_seed = change_folder(folder, rng, next_seed, touched)
            final = subprocess.run(index_command(folder, index_dir), capture_output=True, text=True)
            if final.returncode != 0:
                lockouts += "being updated by another" in final.stderr
                break
        commits = json.loads((index_dir / "manifest.json").read_text())["snapshot"] - first_commit
    result = {
        "kills": args.kills,
        "landed": dict(landed),
        "killed_with_decode_workers": with_workers,
        "orphans": orphans,
        "lockouts": lockouts,
        "commits_after_the_kills": commits,
        "queries": dict(readers.queries),
        "reader_errors": dict(readers.errors),
        "error_examples": readers.examples,
        "final": final_check(folder, index_dir, first_ids, touched)
        if final.returncode == 0
        else final.stderr,
        "seconds": round(time.perf_counter() - start, 1),
    }
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
