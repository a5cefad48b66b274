"""Score zero-shot predictions against true labels: accuracy, per class, confusion matrix.

``score`` is the one accuracy computation: scoring a labelled folder DIR (one subfolder
per class, ``DIR/dog/1.png``: the subfolder names the true label) and training's zero-shot
evaluation (``train/evaluate.py``) both use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import ClipsearchError
from clipsearch.zeroshot.templates import label_of_folder

if TYPE_CHECKING:
    from clipsearch.zeroshot.classify import Prediction


def class_folders(root: Path) -> list[str]:
    """The class names of a labelled folder: its non-hidden subfolders, sorted, named by
    ``zeroshot.label_of_folder``."""
    if not root.is_dir():
        raise ClipsearchError(
            f"scoring needs a folder with one subfolder per class: {root}", parameter="eval_dir"
        )
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise ClipsearchError(
            f"scoring needs at least two class subfolders in {root}", parameter="eval_dir"
        )
    return [label_of_folder(name) for name in names]


def true_label(path: str, root: Path) -> str | None:
    """The class subfolder of ``path`` under ``root`` (None when it is not inside one)."""
    relative = os.path.relpath(path, root)
    parts = Path(relative).parts
    return label_of_folder(parts[0]) if len(parts) > 1 and parts[0] != ".." else None


@dataclass
class EvalReport:
    labels: list[str]
    confusion: np.ndarray  # [true, predicted] counts
    accuracy: float
    per_class: dict[str, float]
    count: int

    def as_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "count": self.count,
            "per_class": self.per_class,
            "labels": self.labels,
            "confusion": self.confusion.tolist(),
        }


def score(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> EvalReport:
    """Accuracy, accuracy per true class and the confusion matrix of class indices into
    ``labels`` (at least one prediction)."""
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (np.asarray(truth), np.asarray(predicted)), 1)
    count = int(confusion.sum())
    per_row = confusion.sum(axis=1)
    per_class = {
        label: float(confusion[i, i] / per_row[i]) for i, label in enumerate(labels) if per_row[i]
    }
    return EvalReport(list(labels), confusion, float(np.trace(confusion) / count), per_class, count)


def evaluate(predictions: Sequence[Prediction], root: Path, labels: Sequence[str]) -> EvalReport:
    """Score predictions for files under ``root`` against the class subfolders they sit in."""
    index = {label: i for i, label in enumerate(labels)}
    pairs = [(true_label(p.path, root), p.label) for p in predictions]
    known = [(index[truth], index[label]) for truth, label in pairs if truth in index]
    if not known:
        raise ClipsearchError(
            f"no image under {root} sits in a subfolder named after a label ({', '.join(labels)})"
        )
    truth, predicted = np.array(known).T
    return score(truth, predicted, labels)


def plot_confusion(report: EvalReport, path: Path) -> Path:
    """A PNG of the confusion matrix, rows normalized to the share of each true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = report.confusion.sum(axis=1, keepdims=True).clip(min=1)
    shares = report.confusion / totals
    size = max(4.0, 0.6 * len(report.labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(report.labels))
    axes.set_xticks(ticks, report.labels, rotation=45, ha="right")
    axes.set_yticks(ticks, report.labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"zero-shot accuracy {report.accuracy:.1%} ({report.count:,} images)")
    for (row, column), count in np.ndenumerate(report.confusion):
        if count:
            color = "white" if shares[row, column] > 0.5 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
