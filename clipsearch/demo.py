"""The demo: the main job end to end, offline, in seconds, scored against true labels.

It writes the bundled sample photos (CIFAR-10 test images, ``clipsearch.bundled``) into a
folder, indexes them with the bundled model into a fresh index, searches them by words and
by one of the photos, classifies them zero-shot, and scores each answer by the labels the
photos came with. Everything runs through the same code as ``clipsearch index``, ``query``
and ``classify``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.errors import ClipsearchError

# Queries as a person would type them, with the class each hit should belong to. The
# bundled model learned its words from prompts naming CIFAR-10's classes ("a photo of a
# truck"), so each query names one: other words ("car", "red") it never saw trained.
TEXT_QUERIES = (
    ("a photo of a dog", "dog"),
    ("a ship at sea", "ship"),
    ("a small bird", "bird"),
    ("a truck on the road", "truck"),
)
IMAGE_QUERY_CLASS = "horse"  # the query photo: the first sample of this class
_MARKER = ".clipsearch-demo"  # marks a folder the demo may empty and fill again


@dataclass
class DemoHit:
    path: str
    score: float
    label: str  # the photo's true class


@dataclass
class DemoQuery:
    kind: str  # "text" or "image"
    query: str  # the text, or the query photo's path
    target: str  # the class a right hit belongs to
    hits: list[DemoHit]

    @property
    def precision(self) -> float:
        """The share of hits of the target class (precision@k, k = len(hits))."""
        return sum(h.label == self.target for h in self.hits) / max(len(self.hits), 1)


@dataclass
class DemoReport:
    directory: str
    model: str
    photos: int
    index_seconds: float
    queries: list[DemoQuery]
    zero_shot_accuracy: float  # on all sample photos, labels = the class folders
    zero_shot_per_class: dict[str, float]
    page: str  # the HTML page of the results
    seconds: float = 0.0
    labels: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for query, out in zip(self.queries, data["queries"], strict=True):
            out["precision"] = query.precision
        return data


def run_demo(
    directory: Path, k: int = 10, progress: Any = None, workers: int | None = None
) -> DemoReport:
    """Run the demo in ``directory`` (made, or emptied when an earlier demo made it)."""
    from clipsearch.bundled import DEMO_MODEL, SAMPLES
    from clipsearch.ingest.datasets import export_images
    from clipsearch.ingest.indexer import IndexOptions, update_index
    from clipsearch.query.search import Index
    from clipsearch.zeroshot.accuracy import class_folders, evaluate, true_label

    start = time.perf_counter()
    shown_directory = directory
    directory = directory.absolute()  # hits carry absolute paths; the query photo must too
    photos, index_dir = _fresh_folder(directory)
    export_images(SAMPLES, photos, by_label=True)
    # The bundled model is an ONNX directory: onnx whatever $CLIPSEARCH_ENGINE asks for.
    options = IndexOptions(engine="onnx")
    if workers is not None:
        options.workers = workers
    summary = update_index([photos], index_dir, DEMO_MODEL, options, progress)
    assert summary is not None  # one process: never a non-zero torchrun rank

    index = Index.open(index_dir, engine="onnx")
    labels = class_folders(photos)

    def scored(hits: list[Any]) -> list[DemoHit]:
        return [DemoHit(h.path, h.score, true_label(h.path, photos) or "") for h in hits]

    queries = [
        DemoQuery("text", text, target, scored(index.search(text, k=k)))
        for text, target in TEXT_QUERIES
    ]
    query_photo = min((photos / IMAGE_QUERY_CLASS).iterdir())
    similar = [h for h in index.search(image=query_photo, k=k + 1) if h.path != str(query_photo)]
    queries.append(DemoQuery("image", str(query_photo), IMAGE_QUERY_CLASS, scored(similar[:k])))

    zero_shot = evaluate(index.classify(labels, templates="default"), photos, labels)
    report = DemoReport(
        directory=str(shown_directory),
        model=DEMO_MODEL,
        photos=summary.images,
        index_seconds=summary.seconds,
        queries=queries,
        zero_shot_accuracy=zero_shot.accuracy,
        zero_shot_per_class=zero_shot.per_class,
        page=str(shown_directory / "results.html"),
        labels=labels,
    )
    _write_page(report, query_photo, directory / "results.html")
    report.seconds = time.perf_counter() - start
    return report


def _fresh_folder(directory: Path) -> tuple[Path, Path]:
    """``directory``'s photos/ and index/ folders, empty; refuses a folder the demo did not
    make, so it never deletes someone's files."""
    if directory.exists():
        if not directory.is_dir():
            raise ClipsearchError(f"{directory} exists and is not a folder: choose another")
        if any(directory.iterdir()) and not (directory / _MARKER).exists():
            raise ClipsearchError(
                f"{directory} already holds files the demo did not write: choose another folder"
            )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _MARKER).write_text("written by `clipsearch demo`, which may empty it\n")
    photos, index_dir = directory / "photos", directory / "index"
    for folder in (photos, index_dir):
        shutil.rmtree(folder, ignore_errors=True)
    return photos, index_dir


def _write_page(report: DemoReport, query_photo: Path, out: Path) -> None:
    from clipsearch.query.pages import Figure, Section, page, write_page

    sections = []
    for query in report.queries:
        figures = [
            Figure(hit.path, f"#{rank} · {hit.score:.3f}", hit.label, hit.label == query.target)
            for rank, hit in enumerate(query.hits, 1)
        ]
        shown = f'"{query.query}"' if query.kind == "text" else "photos like this one"
        intro = f"precision@{len(query.hits)} {query.precision:.2f} (hits that are {query.target})"
        if query.kind == "image":
            figures.insert(0, Figure(str(query_photo), "the query photo", query.target))
        sections.append(Section(shown, figures, intro))
    per_class = ", ".join(f"{label} {acc:.2f}" for label, acc in report.zero_shot_per_class.items())
    sections.append(
        Section(
            "zero-shot classification",
            [],
            f"accuracy {report.zero_shot_accuracy:.2f} on the {report.photos} photos "
            f"(chance {1 / len(report.labels):.2f}); per class: {per_class}",
        )
    )
    title = f"clipsearch demo: {report.photos} CIFAR-10 test photos, model {report.model}"
    write_page(out, page(title, sections))
