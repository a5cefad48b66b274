"""``clipsearch classify``: zero-shot labels for image files or for an index's images."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli.options import CacheDirOpt, DeviceOpt, EngineOpt, IndexOpt, JsonOpt, ModelOpt
from clipsearch.errors import ClipsearchError


def classify(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Image files or folders to classify (embedded on the fly). "
            "Without PATHs, the images of --index are classified.",
            show_default=False,
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(help='Comma-separated labels, e.g. "cat,dog,car".', show_default=False),
    ] = None,
    labels_file: Annotated[
        Path | None, typer.Option(help="A file with one label per line.", show_default=False)
    ] = None,
    templates: Annotated[
        str,
        typer.Option(
            help="Prompt templates: default (CLIP's 80), simple, photo, or a FILE "
            "with one template per line containing {}."
        ),
    ] = "default",
    top: Annotated[int, typer.Option(min=1, help="Show the N most likely labels.")] = 1,
    write_tags: Annotated[
        bool,
        typer.Option(
            help="Store label and probability with the index (query them with "
            "--where \"label = 'dog'\")."
        ),
    ] = False,
    eval_: Annotated[
        bool,
        typer.Option(
            "--eval",
            help="PATH has one subfolder per class: report accuracy, "
            "per-class accuracy and a confusion matrix (labels default to the folders).",
        ),
    ] = False,
    plot: Annotated[
        Path, typer.Option(help="Where --eval writes the confusion-matrix PNG.")
    ] = Path("confusion_matrix.png"),
    index: IndexOpt = None,
    model: ModelOpt = None,
    workers: Annotated[int, typer.Option(min=0, help="Decoding processes for PATHs.")] = 2,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 64,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Zero-shot classification: each image gets the label whose prompts it is closest to."""
    from clipsearch.zeroshot import classify as zs

    if paths and index is not None:
        raise ClipsearchError("give PATHs or --index, not both")
    if eval_ and (not paths or len(paths) != 1):
        raise ClipsearchError("--eval takes one PATH: a folder with one subfolder per class")
    if write_tags and paths:
        raise ClipsearchError("--write-tags stores labels in an index: use --index, not PATHs")
    if eval_ and labels is None and labels_file is None:
        from clipsearch.zeroshot.accuracy import class_folders

        label_list = class_folders(paths[0])
    else:
        label_list = _parse_labels(labels, labels_file)
    template_list = zs.resolve_templates(templates)
    failures: list[tuple[str, str]] = []
    if paths:
        if model is None:  # like the index's own queries: the model of the index, if any
            from clipsearch.settings import resolve_index_dir
            from clipsearch.store.manifest import indexed_model_spec

            model = indexed_model_spec(resolve_index_dir(index))
        predictions, failures = _classify_files(
            paths,
            label_list,
            template_list,
            top,
            model,
            workers,
            batch_size,
            device,
            cache_dir,
            engine,
        )
    else:
        from clipsearch.query.search import Index

        opened = Index.open(index, model=model, device=device, cache_dir=cache_dir, engine=engine)
        predictions = opened.classify(label_list, template_list, top)
        if write_tags:
            zs.write_tags(opened.index_dir, predictions)
    report = None
    if eval_:
        from clipsearch.zeroshot.accuracy import evaluate, plot_confusion

        report = evaluate(predictions, paths[0], label_list)
        plot_confusion(report, plot)
    _print(predictions, failures, report, plot, as_json)


def _classify_files(
    paths, labels, templates, top, model, workers, batch_size, device, cache_dir, engine
):
    from clipsearch.model import Model
    from clipsearch.zeroshot import classify as zs

    loaded = Model.load(model, device=device, cache_dir=cache_dir, engine=engine)
    classifier = zs.load_classifier(loaded.identity, labels, templates, lambda: loaded)
    return zs.classify_files(paths, loaded, classifier, top, workers, batch_size)


def _print(predictions, failures, report, plot: Path, as_json: bool) -> None:
    if as_json:
        payload: dict = {"predictions": [p.as_dict() for p in predictions]}
        payload["errors"] = [{"path": path, "reason": reason} for path, reason in failures]
        if report is not None:
            payload["eval"] = {**report.as_dict(), "plot": str(plot)}
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    if report is None:
        for p in predictions:
            shown = "  ".join(f"{label} {prob:.3f}" for label, prob in p.top)
            print(f"{shown}  {p.path}")
        counts = Counter(p.label for p in predictions)
        print("labels: " + ", ".join(f"{label} {n:,}" for label, n in counts.most_common()))
    else:
        _print_report(report, plot)
    for path, reason in failures:
        print(f"could not read {path}: {reason}")


def _print_report(report, plot: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"accuracy {report.accuracy:.1%} on {report.count:,} images")
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("true \\ predicted")
    for label in report.labels:
        table.add_column(label[:10], justify="right")
    table.add_column("accuracy", justify="right")
    for i, label in enumerate(report.labels):
        cells = [str(int(n)) for n in report.confusion[i]]
        accuracy = report.per_class.get(label)
        table.add_row(label, *cells, "-" if accuracy is None else f"{accuracy:.1%}")
    console.print(table)
    console.print(f"confusion matrix plot: {plot}")


def _parse_labels(labels: str | None, labels_file: Path | None) -> list[str]:
    """--labels "cat,dog" or --labels-file (one per line); duplicates and blanks dropped."""
    if (labels is None) == (labels_file is None):
        raise ClipsearchError("give the labels with either --labels or --labels-file")
    if labels_file is not None:
        try:
            raw = labels_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ClipsearchError(
                f"cannot read labels file {labels_file}: {exc.strerror}"
            ) from None
    else:
        raw = (labels or "").split(",")
    parsed = list(dict.fromkeys(item.strip() for item in raw if item.strip()))
    if len(parsed) < 2:
        raise ClipsearchError("zero-shot classification needs at least two labels")
    return parsed
