"""What a run tells its user: metrics.jsonl, one live progress line, and two PNGs.

Only rank 0 creates these. ``metrics.jsonl`` holds one JSON object per line: training
records (``"kind": "train"``: step, loss, lr, logit_scale, temperature, samples_per_s,
elapsed_s) and evaluation records (``"kind": "eval"``: step and metrics).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
PREDICTIONS_NAME = "predictions.png"


class MetricsLog:
    """Append-only JSONL; on resume, records past the resumed step are dropped first."""

    def __init__(self, directory: Path, resume_step: int | None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / METRICS_NAME
        kept = [r for r in read_metrics(self.path) if resume_step and r["step"] <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class Progress:
    """step, samples/s, loss, lr, temperature, ETA: rewritten in place on a terminal, a plain
    line every ``every_s`` seconds otherwise (logs and pipes)."""

    def __init__(self, total_steps: int, start_step: int, every_s: float = 10.0) -> None:
        self.total, self.start = total_steps, start_step
        self.tty = sys.stderr.isatty()
        self.every = 0.25 if self.tty else every_s
        self.t0 = self.last = time.perf_counter()
        self.paused = 0.0

    def pause(self, seconds: float) -> None:
        """Time spent evaluating or saving is not training time."""
        self.paused += seconds

    def elapsed(self) -> float:
        """Seconds of training so far in this process (evaluation and saving excluded)."""
        return time.perf_counter() - self.t0 - self.paused

    def rate(self, step: int, batch_size: int) -> float:
        return (step - self.start) * batch_size / max(self.elapsed(), 1e-9)

    def update(self, step: int, batch_size: int, loss: float, lr: float, temp: float) -> None:
        now = time.perf_counter()
        if now - self.last < self.every and step < self.total:
            return
        self.last = now
        rate = self.rate(step, batch_size)
        eta = (self.total - step) * batch_size / rate if rate else math.inf
        line = (
            f"step {step}/{self.total} | {rate:,.1f} samples/s | loss {loss:.4f} | "
            f"lr {lr:.2e} | temp {temp:.4f} | ETA {_duration(eta)}"
        )
        if self.tty:
            end = "\n" if step >= self.total else ""
            print(f"\r{line}\033[K", end=end, file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        prefix = "\r\033[K" if self.tty else ""
        print(f"{prefix}{text}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s"


def plot_curves(records: list[dict[str, Any]], path: Path) -> Path:
    """Loss, temperature and validation metrics against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train])
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot(steps, [r["temperature"] for r in train])
    axes[1].set(title="temperature (1 / logit scale)", xlabel="step")
    names = sorted({k for r in evals for k in r} - {"kind", "step", "eval_images", "epoch"})
    for name in names:
        points = [(r["step"], r[name]) for r in evals if name in r]
        axes[2].plot(*zip(*points, strict=True), marker="o", label=name)
    axes[2].set(title="validation (%)", xlabel="step")
    if names:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_predictions(images: list[Any], examples: list[tuple[int, str, str]], path: Path) -> Path:
    """A grid of images titled with the truth and the prediction (green: right, red: wrong)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, max(1, len(examples)))
    rows = max(1, math.ceil(len(examples) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, (_, truth, predicted) in zip(axes.flat, images, examples, strict=False):
        ax.imshow(image)
        color = "green" if truth == predicted else "red"
        title = f"true: {_short(truth)}\npred: {_short(predicted)}"
        ax.set_title(title, fontsize=8, color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _short(text: str, width: int = 38) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
