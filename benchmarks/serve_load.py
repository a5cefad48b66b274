"""Load check for `clipsearch serve`: concurrent clients on loopback, bounded in time.

    python benchmarks/serve_load.py [--n 100000] [--clients 1 4] [--seconds 15] [--warmup 3]
                                    [--mode text|like|mixed] [--index DIR] [--keep]

Builds (once; reused when DIR already holds it) an index of ``n`` synthetic images: catalog
parts with clustered random unit embeddings, written through clipsearch.store's catalog,
vectors and manifest modules under the identity of ``random:clipsearch-tiny``,
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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
from synthetic_index import make_index

from clipsearch.server.discovery import read_info

TINY = "random:clipsearch-tiny"
WORDS = (
    "red blue green small large old new bright dark sunny snowy quiet busy wet",
    "dog cat car beach mountain city street forest river house boat bird tree road",
)
ADJECTIVES, NOUNS = (group.split() for group in WORDS)


# -- the server ------------------------------------------------------------------------------------


def start_server(
    index_dir: Path, timeout: float = 120.0
) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """The server process, its URL and the headers that sign a request in (its token, read
    from server.json; none from a clipsearch older than tokens)."""
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
            token = getattr(info, "token", None)
            return process, info.url, {"Authorization": f"Bearer {token}"} if token else {}
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


def client(url: str, headers: dict[str, str], mode: str, n: int, seed: int, start: float,
           warm_until: float, end: float, phase: Phase, lock: threading.Lock) -> None:  # fmt: skip
    parts = urlsplit(url)
    rng = random.Random(seed)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    while (now := time.perf_counter()) < end:
        path = request_path(mode, rng, n)
        try:
            connection.request("GET", path, headers=headers)
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
    url: str,
    headers: dict[str, str],
    mode: str,
    n: int,
    clients: int,
    warmup: float,
    seconds: float,
    pid: int,
) -> Phase:
    phase = Phase(clients)
    lock = threading.Lock()
    start = time.perf_counter()
    warm_until, end = start + warmup, start + warmup + seconds
    threads = [
        threading.Thread(
            target=client, args=(url, headers, mode, n, i, start, warm_until, end, phase, lock)
        )
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
    process, url, headers = start_server(index_dir)
    try:
        phases = [
            run_phase(
                url, headers, args.mode, args.n, clients, args.warmup, args.seconds, process.pid
            )
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
