"""Indexing throughput against the model-only ceiling, and the cost of a no-op re-index.

    python benchmarks/index_throughput.py [--images 200] [--model random:ViT-B-32]
        [--engines torch/fp32 onnx/fp32 onnx/int8]

1. Makes N large JPEGs (4000x3000, quality 90) by upscaling real COCO-mini photos from
   ../shared/data (cached under /tmp between runs).
2. Ceiling, per engine/precision: the same model embedding already-decoded, already-
   preprocessed pixels at the same batch size.
3. `update_index` on the folder with each engine/precision: images/s while embedding (decode
   in worker processes + model), reported as a ratio to that engine's own ceiling and to the
   first engine's pipeline (torch fp32, the engine before ONNX Runtime), all in the same run.
   Both are steady state: the ceiling after a warm-up batch, the pipeline after its first
   batch (workers starting, the first batch decoded with the model idle); the whole run is
   shown beside it.
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

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

from clipsearch.base.images import DEFAULT_MAX_PIXELS  # noqa: E402
from clipsearch.ingest.indexer import IndexOptions, default_workers, update_index  # noqa: E402
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


def ceiling(model: Model, count: int, batch_size: int) -> tuple[float, float]:
    """The model alone on preprocessed pixels: (images/s, CPU seconds per image)."""
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((batch_size, 3, model.image_size, model.image_size), np.float32)
    model.embed_pixels(pixels)  # warm-up
    batches = max(1, count // batch_size)
    start, cpu = time.perf_counter(), time.process_time()  # process time: all its threads
    for _ in range(batches):
        model.embed_pixels(pixels)
    images = batches * batch_size
    return images / (time.perf_counter() - start), (time.process_time() - cpu) / images


def decode_cost(folder: Path, model: Model, count: int = 32) -> float:
    """CPU seconds to hash, decode and preprocess one of the JPEGs, as a decode worker does."""
    from clipsearch.ingest.loader import _Decoder
    from clipsearch.ingest.scan import scan

    entries = list(scan([folder]))[:count]
    decoder = _Decoder(model.preprocess, model.image_size, DEFAULT_MAX_PIXELS)
    decoder(entries[:2])  # warm-up
    start = time.process_time()
    decoder(entries)
    return (time.process_time() - start) / len(entries)


def throughput(args: argparse.Namespace) -> None:
    folder = large_jpegs(args.images)
    cores = os.cpu_count() or 1
    rows = []
    for setting in args.engines:
        engine, precision = setting.split("/")
        model = Model.load(args.model, engine=engine, precision=precision)
        peaks = [ceiling(model, args.images, args.batch_size)]
        decoding = decode_cost(folder, model)
        with tempfile.TemporaryDirectory() as tmp:
            timer = Timer()
            options = IndexOptions(
                workers=args.workers,
                batch_size=args.batch_size,
                engine=engine,
                precision=precision,
            )
            update_index([folder], Path(tmp) / "index", args.model, options, timer)
        # Bracket every pipeline run with ceilings: this machine's speed drifts by 10%
        # between minutes, so the ceiling is the mean of those measured before and after.
        peaks.append(ceiling(model, args.images, args.batch_size))
        peak = statistics.mean(rate for rate, _ in peaks)
        model_cpu = statistics.mean(cpu for _, cpu in peaks)
        # Decoding needs CPU too, on the same cores: with both, no pipeline can beat this.
        with_decoding = min(peak, cores / (model_cpu + decoding))
        rows.append(
            (setting, peak, decoding, with_decoding, timer.steady_rate(), timer.whole_rate())
        )
        del model
    print(
        f"\n{args.images} JPEGs 4000x3000, {args.model}, batch {args.batch_size}, "
        f"{args.workers} decode workers, CPU ({cores} cores)"
    )
    print(
        "| engine/precision | model-only ceiling img/s | decode CPU ms/img | ceiling with "
        "decoding img/s | pipeline img/s after the first batch | ratio to model-only | "
        "ratio to with-decoding | whole run | pipeline vs the first row |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = rows[0][4]
    for setting, peak, decoding, with_decoding, steady, whole in rows:
        print(
            f"| {setting} | {peak:.1f} | {decoding * 1000:.1f} | {with_decoding:.1f} "
            f"| {steady:.1f} | {steady / peak:.2f} | {steady / with_decoding:.2f} | {whole:.1f} "
            f"| {steady / base:.2f}x |"
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
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["torch/fp32", "onnx/fp32", "onnx/int8"],
        help="ENGINE/PRECISION settings to compare; the first is the reference",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-noop", action="store_true")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"needs the real data in {SHARED}")
    policy = os.environ.get("OMP_WAIT_POLICY")
    print(f"CPUs {os.cpu_count()}, OpenMP wait {policy}")
    if not args.skip_throughput:
        throughput(args)
    if not args.skip_noop:
        no_op(args)


if __name__ == "__main__":
    main()
