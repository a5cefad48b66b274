"""Zero-shot classification: nearest label by prompt-ensembled text embeddings.

A classifier is one unit vector per label (``zeroshot.classifier_weights``); probabilities
are softmax(logit_scale · cosine). Classifiers are cached on disk, keyed by the model's
identity, the labels and the templates, so a second run with the same labels encodes no
text, and classifying an index then needs no model at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsearch.base.durable import publishing
from clipsearch.errors import ClipsearchError
from clipsearch.zeroshot.templates import classifier_weights, get_templates

if TYPE_CHECKING:
    from clipsearch.model import Model
    from clipsearch.model.identity import ModelIdentity

CACHE_ENV = "CLIPSEARCH_CACHE"


@dataclass
class Prediction:
    path: str
    label: str
    probability: float
    top: list[tuple[str, float]] = field(default_factory=list)  # best first
    id: int | None = None  # catalog id, when the image is indexed

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top": [{"label": label, "probability": p} for label, p in self.top],
        }


@dataclass
class Classifier:
    labels: list[str]
    weights: np.ndarray  # (labels, dim), unit rows
    logit_scale: float
    from_cache: bool = False

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        logits = self.logit_scale * (embeddings.astype(np.float32) @ self.weights.T)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(
        self,
        paths: Sequence[str],
        embeddings: np.ndarray,
        top: int = 1,
        ids: Sequence[int] | None = None,
    ) -> list[Prediction]:
        probabilities = self.probabilities(embeddings)
        order = np.argsort(-probabilities, axis=1)[:, : max(1, top)]
        predictions = []
        for row, path in enumerate(paths):
            best = [(self.labels[j], float(probabilities[row, j])) for j in order[row]]
            row_id = None if ids is None else int(ids[row])
            predictions.append(Prediction(path, best[0][0], best[0][1], best, row_id))
        return predictions


def resolve_templates(value: str | Sequence[str]) -> list[str]:
    """A template set (default, simple, photo), a FILE of one template per line, or a list."""
    if isinstance(value, str) and os.path.isfile(value):
        try:
            lines = Path(value).read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            why = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else exc.strerror
            raise ClipsearchError(
                f"cannot read templates file {value}: {why}", parameter="templates"
            ) from None
        return get_templates([line.strip() for line in lines if line.strip()])
    return get_templates(value)


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "clipsearch"
    )
    return Path(base)


def load_classifier(
    identity: ModelIdentity,
    labels: Sequence[str],
    templates: Sequence[str],
    load_model: Callable[[], Model],
) -> Classifier:
    """The classifier for these labels and templates, from the cache or freshly encoded."""
    key = json.dumps(
        {"model": identity.pinned(), "labels": list(labels), "templates": list(templates)}
    )
    path = cache_root() / "classifiers" / f"{hashlib.sha256(key.encode()).hexdigest()}.npz"
    try:
        with np.load(path) as cached:
            return Classifier(list(labels), cached["weights"], float(cached["logit_scale"]), True)
    except (OSError, KeyError, ValueError):
        pass
    model = load_model()
    weights = classifier_weights(model.embed_texts, labels, templates)
    classifier = Classifier(list(labels), weights, model.logit_scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of this process's own: two runs may cache the same classifier at once.
    with publishing(path.with_suffix(f".{os.getpid()}.tmp.npz"), path) as tmp:
        np.savez(tmp, weights=weights, logit_scale=np.float32(classifier.logit_scale))
    return classifier


def classify_files(
    paths: Sequence[str | os.PathLike],
    model: Model,
    classifier: Classifier,
    top: int = 1,
    workers: int = 2,
    batch_size: int = 64,
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Embed image files on the fly and classify them; returns (predictions, (path, reason))."""
    from clipsearch.ingest.loader import decoded_batches
    from clipsearch.ingest.scan import scan

    entries = list(scan(paths))
    predictions: list[Prediction] = []
    failures: list[tuple[str, str]] = []
    batches = decoded_batches(
        entries, model.preprocess, model.image_size, batch_size=batch_size, workers=workers
    )
    for batch in batches:
        if batch.files:
            embeddings = model.embed_pixels(batch.pixels)
            files = [f.entry.path for f in batch.files]
            predictions += classifier.predict(files, embeddings, top)
        failures += [(f.entry.path, f.reason) for f in batch.failures]
    return predictions, failures


def write_tags(index_dir: Path, predictions: Sequence[Prediction]) -> None:
    """Store each image's label and probability with the index, for filters: committed as
    a new snapshot, replacing the labels before (``store.snapshots.commit_tags``).

    The catalog view joins the labels on id, so the filter ``label = 'dog'`` works."""
    import pyarrow as pa

    from clipsearch.store.snapshots import commit_tags

    table = pa.table(
        {
            "id": pa.array([p.id for p in predictions], pa.int64()),
            "label": pa.array([p.label for p in predictions], pa.string()),
            "label_probability": pa.array([p.probability for p in predictions], pa.float32()),
        }
    )
    commit_tags(index_dir, table)
