"""Training samples/s: ``clipsearch train`` beside open_clip's own trainer, same data and model.

    python benchmarks/train_throughput.py [--batch-size 128] [--steps 24] [--workers 1]

Writes batch_size * steps CIFAR-10 training images (../shared/data/cifar10) as PNG files with a
CSV (filepath,title = "a photo of a {label}."; --unique-captions: one distinct caption per
image), then trains clipsearch-tiny on it with each
trainer in turn: same architecture, batch size, precision (fp32), workers, augmentation
(random resized crop at scale 0.9-1, no flip), learning rate and warmup, plain CLIP loss.
samples/s is batch size / the median step time after the first ``--warmup-steps``, from each
trainer's own per-step timings; each trainer runs --repeats times, alternating, and keeps its
best (the machine is shared). open_clip's trainer needs pandas, webdataset and braceexpand.

    python benchmarks/train_throughput.py --agree [--batch-size 128] [--steps 8]

checks that both trainers compute the same losses: both start from one saved random
initialisation, the training set is exactly one batch (so shuffling cannot change what a step
sees: the loss is a mean over the batch), augmentation is the identity (crop scale and ratio
1 on 32-px images at 32 px), no weight decay (the two trainers exempt different parameters).
open_clip's loss is read at full precision by wrapping its ClipLoss.forward (its log prints 5
significant digits); nothing in its computation changes.
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
    "from clipsearch.model import architectures\n"
    "architectures.register()\n"
    "from open_clip_train.main import main\n"
    "main(sys.argv[1:])\n"
)

# The same, printing each step's loss at full precision (for --agree).
OPEN_CLIP_LOSSES = (
    "import sys\n"
    "import open_clip.loss\n"
    "forward = open_clip.loss.ClipLoss.forward\n"
    "def logged(self, *args, **kwargs):\n"
    "    out = forward(self, *args, **kwargs)\n"
    "    loss = out['contrastive_loss'] if isinstance(out, dict) else out\n"
    "    print(f'LOSS {loss.item():.9f}', file=sys.stderr, flush=True)\n"
    "    return out\n"
    "open_clip.loss.ClipLoss.forward = logged\n"
) + OPEN_CLIP_MAIN

RECIPE = """
[data]
path = "{csv}"
image_column = "filepath"
caption_column = "title"
crop_scale = [{crop}, 1.0]
flip = false
workers = {workers}
[model]
arch = "clipsearch-tiny"
init = "{init}"
[loss]
multi_positive = "false"
[optim]
steps = {steps}
batch_size = {batch}
lr = 1e-3
warmup = {warmup}
weight_decay = {wd}
grad_clip = 0  # open_clip_train's default: no clipping
precision = "fp32"
device = "cpu"
[output]
log_every = 1
save_every = 0
plots = false
"""


def write_images(directory: Path, count: int, unique: bool = False) -> Path:
    """CIFAR-10 images as PNG files and a CSV of path, caption ("a photo of a {label}.", or
    with ``unique`` one distinct caption per image, as in web-caption datasets)."""
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
        caption = f"a photo of a {label} number {i}." if unique else f"a photo of a {label}."
        rows.append(f"{path},{caption}")
    csv = directory / "train.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def open_clip_command(csv: Path, work: Path, args: argparse.Namespace, agree: bool) -> list[str]:
    """open_clip_train with the settings of RECIPE (the same, flag by flag)."""
    epochs = args.steps if agree else 1  # agree: the data is one batch, an epoch one step
    command = [
        sys.executable, "-c", OPEN_CLIP_LOSSES if agree else OPEN_CLIP_MAIN,
        "--train-data", str(csv), "--dataset-type", "csv", "--csv-separator", ",",
        "--csv-img-key", "filepath", "--csv-caption-key", "title",
        "--model", "clipsearch-tiny", "--batch-size", str(args.batch_size),
        "--epochs", str(epochs), "--precision", "fp32", "--workers", str(args.workers),
        "--device", "cpu", "--lr", "1e-3", "--warmup", "2" if agree else "5",
        "--wd", "0" if agree else "0.2", "--save-frequency", "0",
        "--logs", str(work / "open_clip_logs"), "--name", "bench", "--log-every-n-steps", "1",
        "--seed", "0", "--report-to", "",
        # open_clip_train's defaults for a model not named ViT are beta2 0.999, eps 1e-8
        "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6",
    ]  # fmt: skip
    if agree:
        command += ["--pretrained", str(work / "init.pt"), "--aug-cfg", "scale=(1.0,1.0)"]
        command += ["ratio=(1.0,1.0)"]
    return command


def run_open_clip(csv: Path, work: Path, args: argparse.Namespace) -> list[float]:
    """Per-step seconds from open_clip_train's log."""
    shutil.rmtree(work / "open_clip_logs", ignore_errors=True)
    command = open_clip_command(csv, work, args, agree=False)
    subprocess.run(command, check=True, cwd=work, capture_output=True)
    log = (work / "open_clip_logs" / "bench" / "out.log").read_text()
    return [float(t) for t in re.findall(r"Batch \(t\): ([\d.]+),", log)]


def run_clipsearch(csv: Path, work: Path, args: argparse.Namespace, agree: bool = False) -> Path:
    """Train with clipsearch; returns the run's metrics.jsonl."""
    recipe = work / "bench.toml"
    settings = {"init": work / "init", "crop": 1.0, "wd": 0.0, "warmup": 2} if agree else {}
    defaults = {"init": "", "crop": 0.9, "wd": 0.2, "warmup": 5}
    recipe.write_text(
        RECIPE.format(
            csv=csv,
            workers=args.workers,
            steps=args.steps,
            batch=args.batch_size,
            **{**defaults, **settings},
        )
    )
    out = work / "clipsearch_run"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "clipsearch", "train", str(recipe), "--out", str(out)]
    subprocess.run(command, check=True, cwd=work, capture_output=True)
    return out / "metrics.jsonl"


def step_seconds(metrics: Path) -> list[float]:
    """Per-step seconds from clipsearch's metrics.jsonl (elapsed_s of each step)."""
    lines = metrics.read_text().splitlines()
    elapsed = [json.loads(line)["elapsed_s"] for line in lines if '"train"' in line]
    return [b - a for a, b in zip([0.0, *elapsed], elapsed, strict=False)]


def agree(work: Path, args: argparse.Namespace) -> None:
    """Losses of both trainers, step by step, from one initialisation on one batch."""
    import torch

    from clipsearch.model import Model

    (work / "images").mkdir()
    csv = write_images(work / "images", args.batch_size)
    start = Model.load("random:clipsearch-tiny", engine="torch")
    start.save(work / "init")
    torch.save({"state_dict": start.module.state_dict()}, work / "init.pt")
    metrics = run_clipsearch(csv, work, args, agree=True)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    ours = [r["loss"] for r in records if r["kind"] == "train"]
    command = open_clip_command(csv, work, args, agree=True)
    ran = subprocess.run(command, check=True, cwd=work, capture_output=True, text=True)
    theirs = [float(x) for x in re.findall(r"^LOSS ([\d.]+)$", ran.stderr, re.MULTILINE)]
    print(f"clipsearch-tiny, batch {args.batch_size} (the whole set), fp32, CPU, seed 0")
    print("| step | clipsearch train | open_clip_train | difference |")
    print("| ---: | ---: | ---: | ---: |")
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True), 1):
        print(f"| {step} | {a:.6f} | {b:.6f} | {abs(a - b):.1e} |")
    worst = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    print(f"largest difference over {len(ours)} steps: {worst:.1e}")


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
    parser.add_argument("--agree", action="store_true", help="compare losses, not speed")
    parser.add_argument(
        "--unique-captions", action="store_true", help="a distinct caption for every image"
    )
    args = parser.parse_args()
    skip = args.warmup_steps
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.agree:
            agree(work, args)
            return
        (work / "images").mkdir()
        csv = write_images(work / "images", args.batch_size * args.steps, args.unique_captions)
        ours, theirs = 0.0, 0.0
        for _ in range(args.repeats):  # alternate, keep the best: the machine is shared
            seconds = step_seconds(run_clipsearch(csv, work, args))
            ours = max(ours, rate(seconds, args.batch_size, skip))
            theirs = max(theirs, rate(run_open_clip(csv, work, args), args.batch_size, skip))
    captions = "one per image" if args.unique_captions else "10 distinct (class prompts)"
    print(f"clipsearch-tiny, batch {args.batch_size}, fp32, CPU, {args.workers} worker(s)")
    print(f"captions: {captions}")
    print(f"| trainer | samples/s (steps {args.warmup_steps + 1}-{args.steps}) |")
    print("| --- | ---: |")
    print(f"| clipsearch train | {ours:,.1f} |")
    print(f"| open_clip_train | {theirs:,.1f} |")
    print(f"ratio clipsearch / open_clip: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
