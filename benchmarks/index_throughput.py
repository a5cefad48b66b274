"""Indexing throughput against the model-only ceiling, and the cost of a no-op re-index.

    python benchmarks/index_throughput.py [--images 200] [--model random:ViT-B-32]

1. Makes N large JPEGs (4000x3000, quality 90) by upscaling real COCO-mini photos from
   ../shared/data (cached under /tmp between runs).
2. Ceiling: the same model embedding already-decoded, already-preprocessed tensors at the
   same batch size.
3. `update_index` on the folder: images/s while embedding (decode in worker processes +
   model), reported as a ratio to the ceiling measured in the same run. Both are steady
   state: the ceiling after a warm-up batch, the pipeline after its first batch (workers
   starting, the first batch decoded with the model idle); the whole run is shown beside it.
4. No-op re-index: 1,000 small PNGs (CIFAR-10 test images) indexed once with the tiny model,
   then indexed again with nothing changed; reported per 1,000 files, in process and as a
   whole `clipsearch index` command.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clipsearch.settings import let_decoders_share_cores

let_decoders_share_cores()  # as `clipsearch index` does, before torch and faiss load

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from clipsearch.indexer import IndexOptions, default_workers, update_index  # noqa: E402
from clipsearch.model import Model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path(tempfile.gettempdir()) / "clipsearch-bench"


def large_jpegs(count: int) -> Path:
    folder = CACHE / f"jpeg-4000x3000-{count}"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    photos = pq.read_table(
        SHARED / "coco_mini" / "images-00000-of-00001.parquet", columns=["image"]
    )
    blobs = photos.column("image").to_pylist()
    for i in range(count):
        image = Image.open(io.BytesIO(blobs[i % len(blobs)])).convert("RGB")
        image = image.resize((4000, 3000), Image.Resampling.BICUBIC)
        image.save(folder / f"photo-{i:04d}.jpg", quality=90)
    return folder


def small_pngs(count: int) -> Path:
    folder = CACHE / f"cifar-png-{count}"
    if folder.is_dir() and len(list(folder.glob("*.png"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(SHARED / "cifar10" / "test.parquet", columns=["image"]).slice(0, count)
    for i, png in enumerate(table.column("image").to_pylist()):
        (folder / f"{i:05d}.png").write_bytes(png)
    return folder


class Timer:
    """A Progress that records when embedding starts, when each batch is done, and the end."""

    def start(self, total: int) -> None:
        self.total, self.done, self.began = total, 0, time.perf_counter()
        self.first: tuple[int, float] | None = None

    def advance(self, count: int) -> None:
        self.done += count
        self.ended = time.perf_counter()
        if self.first is None:
            self.first = (self.done, self.ended)

    def whole_rate(self) -> float:
        return self.done / (self.ended - self.began)

    def steady_rate(self) -> float:
        """After the first batch: the pipeline is full, as the ceiling's warmed-up model."""
        assert self.first is not None
        done, at = self.first
        return (self.done - done) / (self.ended - at)


def ceiling(model: Model, count: int, batch_size: int) -> float:
    pixels = torch.randn(batch_size, 3, model.image_size, model.image_size)
    model.embed_pixels(pixels)  # warm-up
    batches = max(1, count // batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        model.embed_pixels(pixels)
    return batches * batch_size / (time.perf_counter() - start)


def throughput(args: argparse.Namespace) -> None:
    folder = large_jpegs(args.images)
    model = Model.load(args.model)
    rows, peaks = [], [ceiling(model, args.images, args.batch_size)]
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            timer = Timer()
            options = IndexOptions(workers=workers, batch_size=args.batch_size)
            update_index([folder], Path(tmp) / "index", args.model, options, timer)
        rows.append((workers, timer.steady_rate(), timer.whole_rate()))
        # Bracket every pipeline run with ceilings: this machine's speed drifts by 10%
        # between minutes, so the ceiling is the mean of those measured before and after.
        peaks.append(ceiling(model, args.images, args.batch_size))
    peak = statistics.mean(peaks)
    print(f"\n{args.images} JPEGs 4000x3000, {args.model}, batch {args.batch_size}, CPU")
    print(f"ceilings measured between the runs: {', '.join(f'{x:.1f}' for x in peaks)} img/s")
    print("| pipeline | img/s after the first batch | ratio to ceiling | whole run (ratio) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| model only (decoded tensors, warmed up) | {peak:.1f} | 1.00 | |")
    for workers, steady, whole in rows:
        print(
            f"| `clipsearch index`, {workers} decode workers | {steady:.1f} | {steady / peak:.2f} "
            f"| {whole:.1f} ({whole / peak:.2f}) |"
        )


def no_op(args: argparse.Namespace) -> None:
    folder = small_pngs(1000)
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(tmp) / "index"
        options = IndexOptions(workers=default_workers())
        update_index([folder], index_dir, "random:clipsearch-tiny", options)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            summary = update_index([folder], index_dir, None, options)
            times.append(time.perf_counter() - start)
            assert not summary.committed
        cli = str(Path(sys.executable).with_name("clipsearch"))
        wall = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(
                [cli, "index", str(folder), "--index", str(index_dir)],
                check=True,
                capture_output=True,
            )
            wall.append(time.perf_counter() - start)
    print("\nno-op re-index of 1,000 files (nothing changed)")
    print("| what | time |\n| --- | ---: |")
    print(f"| `update_index` in process | {statistics.median(times) * 1000:.0f} ms |")
    print(f"| `clipsearch index` command, wall | {statistics.median(wall) * 1000:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--model", default="random:ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, default_workers()])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-noop", action="store_true")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"needs the real data in {SHARED}")
    policy = os.environ.get("OMP_WAIT_POLICY")
    print(f"torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, OpenMP wait {policy}")
    if not args.skip_throughput:
        throughput(args)
    if not args.skip_noop:
        no_op(args)


if __name__ == "__main__":
    main()
