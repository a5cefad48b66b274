"""Training samples/s: ``clipsearch train`` beside open_clip's own trainer, same data and model.

    python benchmarks/train_throughput.py [--batch-size 128] [--steps 24] [--workers 1]

Writes batch_size * steps CIFAR-10 training images (../shared/data/cifar10) as PNG files with a
CSV (filepath,title = "a photo of a {label}."), then trains clipsearch-tiny on it with each
trainer in turn: same architecture, batch size, precision (fp32), workers, augmentation
(random resized crop at scale 0.9-1, no flip), learning rate and warmup, plain CLIP loss.
samples/s is batch size / the median step time after the first ``--warmup-steps``, from each
trainer's own per-step timings; each trainer runs --repeats times, alternating, and keeps its
best (the machine is shared). open_clip's trainer needs pandas, webdataset and braceexpand.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CIFAR = REPO.parent / "shared" / "data" / "cifar10" / "train-00000-of-00005.parquet"

OPEN_CLIP_MAIN = (
    "import sys\n"
    "from clipsearch import architectures\n"
    "architectures.register()\n"
    "from open_clip_train.main import main\n"
    "main(sys.argv[1:])\n"
)

RECIPE = """
[data]
path = "{csv}"
image_column = "filepath"
caption_column = "title"
crop_scale = [0.9, 1.0]
flip = false
workers = {workers}
[model]
arch = "clipsearch-tiny"
[loss]
multi_positive = "false"
[optim]
steps = {steps}
batch_size = {batch}
lr = 1e-3
warmup = 5
weight_decay = 0.2
grad_clip = 0  # open_clip_train's default: no clipping
precision = "fp32"
device = "cpu"
[output]
log_every = 1
save_every = 0
plots = false
"""


def write_images(directory: Path, count: int) -> Path:
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(CIFAR).slice(0, count)
    rows = ["filepath,title"]
    for i, (data, label) in enumerate(
        zip(table["image"].to_pylist(), table["label_name"].to_pylist(), strict=True)
    ):
        path = directory / f"{i:05d}.png"
        Image.open(io.BytesIO(data)).save(path)
        rows.append(f"{path},a photo of a {label}.")
    csv = directory / "train.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def run_open_clip(csv: Path, work: Path, args: argparse.Namespace) -> list[float]:
    """Per-step seconds from open_clip_train's log."""
    command = [
        sys.executable, "-c", OPEN_CLIP_MAIN,
        "--train-data", str(csv), "--dataset-type", "csv", "--csv-separator", ",",
        "--csv-img-key", "filepath", "--csv-caption-key", "title",
        "--model", "clipsearch-tiny", "--batch-size", str(args.batch_size), "--epochs", "1",
        "--precision", "fp32", "--workers", str(args.workers), "--device", "cpu",
        "--lr", "1e-3", "--warmup", "5", "--wd", "0.2", "--save-frequency", "0",
        "--logs", str(work / "open_clip_logs"), "--name", "bench", "--log-every-n-steps", "1",
        "--seed", "0", "--report-to", "",
    ]  # fmt: skip
    shutil.rmtree(work / "open_clip_logs", ignore_errors=True)
    subprocess.run(command, check=True, cwd=work, capture_output=True)
    log = (work / "open_clip_logs" / "bench" / "out.log").read_text()
    return [float(t) for t in re.findall(r"Batch \(t\): ([\d.]+),", log)]


def run_clipsearch(csv: Path, work: Path, args: argparse.Namespace) -> list[float]:
    """Per-step seconds from clipsearch's metrics.jsonl (elapsed_s of each step)."""
    recipe = work / "bench.toml"
    recipe.write_text(
        RECIPE.format(csv=csv, workers=args.workers, steps=args.steps, batch=args.batch_size)
    )
    out = work / "clipsearch_run"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "clipsearch.train", str(recipe), "--out", str(out)]
    subprocess.run(command, check=True, cwd=work, capture_output=True)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    elapsed = [json.loads(line)["elapsed_s"] for line in lines if '"train"' in line]
    return [b - a for a, b in zip([0.0, *elapsed], elapsed, strict=False)]


def rate(step_seconds: list[float], batch_size: int, skip: int) -> float:
    """From the median step: robust to the other work that shares this machine."""
    return batch_size / statistics.median(step_seconds[skip:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--warmup-steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    skip = args.warmup_steps
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        csv = write_images(work / "images", args.batch_size * args.steps)
        ours, theirs = 0.0, 0.0
        for _ in range(args.repeats):  # alternate, keep the best: the machine is shared
            ours = max(ours, rate(run_clipsearch(csv, work, args), args.batch_size, skip))
            theirs = max(theirs, rate(run_open_clip(csv, work, args), args.batch_size, skip))
    print(f"clipsearch-tiny, batch {args.batch_size}, fp32, CPU, {args.workers} worker(s)")
    print(f"| trainer | samples/s (steps {args.warmup_steps + 1}-{args.steps}) |")
    print("| --- | ---: |")
    print(f"| clipsearch train | {ours:,.1f} |")
    print(f"| open_clip_train | {theirs:,.1f} |")
    print(f"ratio clipsearch / open_clip: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
