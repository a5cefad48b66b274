"""Load check for `clipsearch serve`: concurrent clients on loopback, bounded in time.

    python benchmarks/serve_load.py [--n 100000] [--clients 1 4] [--seconds 15] [--warmup 3]
                                    [--mode text|like|mixed] [--index DIR] [--keep]

Builds (once; reused when DIR already holds it) an index of ``n`` synthetic images: catalog
parts with clustered random unit embeddings, written through clipsearch.catalog,
clipsearch.vectors and clipsearch.manifest under the identity of ``random:clipsearch-tiny``,
so real text queries are encoded by the real (tiny) model. Starts `clipsearch serve` on
127.0.0.1 (a free port), then runs one phase per ``--clients`` value, that many clients at
once, each phase for ``warmup`` + ``seconds`` seconds over keep-alive connections, and prints
p50/p90/p99/max latency, throughput, the server's CPU time per request and errors per phase
(warm-up requests are not counted).

Goal (issue 7): zero errors; p99 < 100 ms for text queries on a 100k index after warm-up.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import pyarrow as pa

from clipsearch import catalog, vectors
from clipsearch.manifest import Manifest, commit_manifest, read_manifest
from clipsearch.server.discovery import read_info

TINY = "random:clipsearch-tiny"
PART_ROWS = 25_000
WORDS = (
    "red blue green small large old new bright dark sunny snowy quiet busy wet",
    "dog cat car beach mountain city street forest river house boat bird tree road",
)
ADJECTIVES, NOUNS = (group.split() for group in WORDS)


# -- a synthetic index -----------------------------------------------------------------------------


def clustered(n: int, dim: int, seed: int = 0, topics: int = 200) -> np.ndarray:
    """Unit vectors around ``topics`` centres (real embeddings cluster; noise would not)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim), dtype=np.float32)
    out = centres[rng.integers(topics, size=n)]
    out += 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def catalog_part(ids: np.ndarray, embeddings: np.ndarray, schema: pa.Schema) -> pa.Table:
    rng = np.random.default_rng(int(ids[0]))
    n = len(ids)
    now = datetime.now(timezone.utc)
    taken = np.datetime64("2015-01-01") + rng.integers(0, 3650 * 86400, n).astype("m8[s]")
    columns = {
        "id": pa.array(ids, pa.int64()),
        "path": pa.array([f"/nonexistent/clipsearch-bench/{i:07d}.jpg" for i in ids]),
        "size": pa.array(rng.integers(50_000, 5_000_000, n), pa.int64()),
        "mtime_ns": pa.array(rng.integers(1.4e18, 1.7e18, n), pa.int64()),
        "content_hash": pa.array([f"{i:032x}" for i in ids]),
        "width": pa.array(rng.integers(320, 6000, n), pa.int32()),
        "height": pa.array(rng.integers(240, 4000, n), pa.int32()),
        "format": pa.array(["JPEG"] * n),
        "taken_at": pa.array(taken.astype("M8[us]"), pa.timestamp("us")),
        "indexed_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
    }
    values = pa.array(embeddings.reshape(-1).astype(np.float16), pa.float16())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(values, embeddings.shape[1])
    return pa.table(columns, schema=schema)


def make_index(index_dir: Path, n: int) -> None:
    """Write a committed index of ``n`` synthetic rows (skipped when one is already there)."""
    existing = read_manifest(index_dir) if (index_dir / "manifest.json").exists() else None
    if existing is not None and existing.counts["images"] == n:
        print(f"re-using the {n:,}-image index at {index_dir}", file=sys.stderr)
        return
    from clipsearch.model import Model

    start = time.perf_counter()
    identity = Model.load(TINY, device="cpu").identity
    dim = identity["dim"]
    schema = catalog.catalog_schema(dim, "float16")
    ids = np.arange(n, dtype=np.int64)
    embeddings = clustered(n, dim)
    stored = embeddings.astype(np.float16).astype(np.float32)  # what the catalog holds
    parts = []
    for begin in range(0, n, PART_ROWS):
        rows = slice(begin, begin + PART_ROWS)
        table = catalog_part(ids[rows], embeddings[rows], schema)
        path = catalog.write_table(index_dir / catalog.CATALOG_DIR, "part", table)
        parts.append(path.relative_to(index_dir).as_posix())
    index, info = vectors.build(ids, stored)
    vector_file = index_dir / "vectors" / "index-000001.faiss"
    vector_file.parent.mkdir(parents=True, exist_ok=True)
    vectors.save(index, vector_file)
    manifest = Manifest(
        model=identity,
        embedding_dim=dim,
        embedding_dtype="float16",
        snapshot=1,
        next_id=n,
        counts={"images": n, "errors": 0},
        catalog=parts,
        vector_index={"file": vector_file.relative_to(index_dir).as_posix(), **asdict(info)},
    )
    commit_manifest(index_dir, manifest)
    took = time.perf_counter() - start
    print(f"built a {n:,}-image {info.kind} index in {took:.1f} s", file=sys.stderr)


# -- the server ------------------------------------------------------------------------------------


def start_server(index_dir: Path, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    from clipsearch.cli.main import app

    if any(c.name == "serve" for c in app.registered_commands):
        command = [sys.executable, "-m", "clipsearch", "serve"]
    else:  # until main.py registers it
        code = "import typer; from clipsearch.cli.serve import serve; typer.run(serve)"
        command = [sys.executable, "-c", code]
    command += ["--index", str(index_dir), "--port", "0", "--log-level", "warning"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        info = read_info(index_dir)
        if info is not None and info.pid == process.pid:
            return process, info.url
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not start: {process.communicate()[1]}")


# -- load ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    clients: int
    latencies: list[float] = field(default_factory=list)  # seconds, counted requests only
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float = math.nan  # server CPU seconds while counting

    def row(self, mode: str) -> str:
        ms = np.asarray(self.latencies) * 1000
        p50, p90, p99 = (np.percentile(ms, q) if len(ms) else math.nan for q in (50, 90, 99))
        worst = ms.max() if len(ms) else math.nan
        rate = len(ms) / self.seconds if self.seconds else 0.0
        cpu = self.server_cpu * 1000 / len(ms) if len(ms) else math.nan
        return (
            f"| {mode} | {self.clients} | {len(ms):,} | {rate:,.0f}/s | {p50:.1f} | {p90:.1f} | "
            f"{p99:.1f} | {worst:.1f} | {cpu:.1f} | {len(self.errors)} |"
        )


def request_path(mode: str, rng: random.Random, n: int) -> str:
    text = f"a photo of a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    if mode == "like" or (mode == "mixed" and rng.random() < 0.3):
        return "/api/search?" + urlencode({"like": rng.randrange(n), "k": 10})
    if mode == "mixed" and rng.random() < 0.3:
        return "/api/search?" + urlencode({"q": text, "k": 10, "where": "width > 2000"})
    return "/api/search?" + urlencode({"q": text, "k": 10})


def client(url: str, mode: str, n: int, seed: int, start: float, warm_until: float, end: float,
           phase: Phase, lock: threading.Lock) -> None:  # fmt: skip
    parts = urlsplit(url)
    rng = random.Random(seed)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    while (now := time.perf_counter()) < end:
        path = request_path(mode, rng, n)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            ok = response.status == 200 and len(json.loads(body)["hits"]) == 10
            error = None if ok else f"{response.status}: {body[:200]!r}"
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            connection.close()
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        took = time.perf_counter() - now
        if now >= warm_until:
            with lock:
                if error:
                    phase.errors.append(error)
                else:
                    phase.latencies.append(took)
    connection.close()


def run_phase(
    url: str, mode: str, n: int, clients: int, warmup: float, seconds: float, pid: int
) -> Phase:
    phase = Phase(clients)
    lock = threading.Lock()
    start = time.perf_counter()
    warm_until, end = start + warmup, start + warmup + seconds
    threads = [
        threading.Thread(target=client, args=(url, mode, n, i, start, warm_until, end, phase, lock))
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, warm_until - time.perf_counter()))
    cpu_start = cpu_seconds(pid)
    time.sleep(max(0.0, end - time.perf_counter()))
    phase.server_cpu = cpu_seconds(pid) - cpu_start
    for thread in threads:
        thread.join()
    phase.seconds = seconds
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="images in the synthetic index")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 4], help="concurrent clients, per phase"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted time per phase")
    parser.add_argument("--mode", choices=("text", "like", "mixed"), default="text")
    parser.add_argument("--index", type=Path, help="where to build (or re-use) the index")
    parser.add_argument("--keep", action="store_true", help="keep a temporary index")
    args = parser.parse_args()

    index_dir = args.index or Path(tempfile.mkdtemp(prefix="clipsearch-serve-load-")) / "index"
    make_index(index_dir, args.n)
    process, url = start_server(index_dir)
    try:
        phases = [
            run_phase(url, args.mode, args.n, clients, args.warmup, args.seconds, process.pid)
            for clients in args.clients
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        if args.index is None and not args.keep:
            import shutil

            shutil.rmtree(index_dir.parent, ignore_errors=True)
    print(f"\n{args.n:,} images, {os.cpu_count()} CPUs, {args.seconds:g} s per phase after "
          f"{args.warmup:g} s warm-up, k=10, {url}\n")  # fmt: skip
    print(
        "| queries | clients | requests | rate | p50 ms | p90 ms | p99 ms | max ms "
        "| server CPU ms/request | errors |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for phase in phases:
        print(phase.row(args.mode))
    for phase in phases:
        for error in sorted(set(phase.errors))[:5]:
            print(f"error ({phase.clients} clients): {error}", file=sys.stderr)


if __name__ == "__main__":
    main()
