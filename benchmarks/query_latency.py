"""Cold and warm `clipsearch query` wall time on a 100k-image index, beside what it is made of.

    python benchmarks/query_latency.py [--n 100000] [--model random:ViT-B-32]

Embedding 100k real images with ViT-B-32 takes over an hour on this CPU, so the index is
fabricated: clustered random unit vectors written through the real catalog, vector-index and
manifest code, with the identity of the real model, so a real text query runs against it.
Measured in the same run: the whole command cold (process start to printed results, the
model's ONNX export already cached, no background server), the same command warm (answered by
the background server the first query leaves), loading the model in process, and a warm
in-process search. Goals (issue 16): cold <= 1.0 s, warm <= 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synthetic_index import make_index


def wall(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--model", default="random:ViT-B-32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from clipsearch.model import Model
    from clipsearch.query.search import Index

    Model.load(args.model)  # the ONNX export is made once, before anything is timed
    start = time.perf_counter()
    model = Model.load(args.model)
    model.embed_texts(["a photo of a dog"])
    load_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "index"
        make_index(directory, args.n, args.model)
        cli = str(Path(sys.executable).with_name("clipsearch"))
        query = [cli, "query", "a photo of a dog", "--index", str(directory)]
        cold = wall([*query, "--local", "--warm-for", "0"], args.repeats)
        subprocess.run([*query, "--warm-for", "60"], check=True, capture_output=True)
        time.sleep(10)  # the background server loads the model
        warm_cli = wall(query, args.repeats)
        server = json.loads((directory / "server.json").read_text())
        os.kill(server["pid"], signal.SIGTERM)
        index = Index.open(directory)
        index.search("warm-up", k=10)
        warm = []
        for text in ["a photo of a dog", "a red car", "two people on a beach"] * 5:
            t0 = time.perf_counter()
            index.search(text, k=10)
            warm.append(time.perf_counter() - t0)
    print(f"\n{args.n:,}-image index, {args.model} ({model.dim} dims, {model.engine} engine), CPU")
    print("| what | time |\n| --- | ---: |")
    print(f'| cold `clipsearch query "a photo of a dog"`, wall | {cold:.2f} s |')
    print(f"| warm: the same command, answered by the background server | {warm_cli:.2f} s |")
    print(f"| model load and first text query ({args.model}, in process) | {load_seconds:.2f} s |")
    print(
        f"| warm `Index.search(text)` p50 (encode + search + lookup) | "
        f"{statistics.median(warm) * 1000:.0f} ms |"
    )


if __name__ == "__main__":
    main()
