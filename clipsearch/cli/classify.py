"""``clipsearch classify``: zero-shot labels for image files or for an index's images."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clipsearch.cli.options import CacheDirOpt, DeviceOpt, EngineOpt, IndexOpt, JsonOpt
from clipsearch.errors import ClipsearchError
from clipsearch.settings import DEFAULT_MODEL_SPEC, INDEX_ENV, MODEL_ENV, resolve_index_dir

if TYPE_CHECKING:
    from rich.console import JustifyMethod

DEFAULT_PLOT = Path("confusion_matrix.png")

# Not the shared --model option: classify's default depends on what it classifies.
ClassifyModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=(
            "Model spec, as for `clipsearch index`. Default: with --index, the index's model; "
            "with PATHs, the model of the default index, if there is one (named by "
            f"${INDEX_ENV}, else indexes/default), else ${MODEL_ENV}, else the pretrained "
            f"{DEFAULT_MODEL_SPEC.partition(':')[0]}. stderr names the model used."
        ),
        show_default=False,
    ),
]


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
        Path,
        typer.Option(
            help="Where --eval writes the confusion-matrix PNG "
            "(by default into the working directory)."
        ),
    ] = DEFAULT_PLOT,
    index: IndexOpt = None,
    model: ClassifyModelOpt = None,
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

        assert paths  # --eval has one PATH (checked above)
        label_list = class_folders(paths[0])
    else:
        label_list = _parse_labels(labels, labels_file)
    template_list = zs.resolve_templates(templates)
    failures: list[tuple[str, str]] = []
    if paths:
        model, origin = _model_for_files(model)
        predictions, failures = _classify_files(
            paths,
            label_list,
            template_list,
            top,
            model,
            origin,
            workers,
            batch_size,
            device,
            cache_dir,
            engine,
        )
    else:
        from clipsearch.query.search import Index

        opened = Index.open(index, model=model, device=device, cache_dir=cache_dir, engine=engine)
        origin = "--model" if model is not None else "the index's model"
        _say(f"classifying index {_shown(opened.index_dir)} with {opened.model_spec} ({origin})")
        predictions = opened.classify(label_list, template_list, top)
        if write_tags:
            zs.write_tags(opened.index_dir, predictions)
    report = None
    if eval_:
        from clipsearch.zeroshot.accuracy import evaluate, plot_confusion

        assert paths  # --eval has one PATH (checked above)
        report = evaluate(predictions, paths[0], label_list)
        plot_confusion(report, plot)
    _print(predictions, failures, report, plot, as_json)


def _model_for_files(model: str | None) -> tuple[str, str]:
    """The model that classifies image files, and where that choice came from: --model, else
    the model of the default index (as its queries use: its embeddings are comparable), else
    $CLIPSEARCH_MODEL, else the built-in default."""
    from clipsearch.store.manifest import indexed_model_spec

    if model is not None:
        return model, "--model"
    index_dir = resolve_index_dir(None)
    indexed = indexed_model_spec(index_dir)
    if indexed is not None:
        return indexed, f"the model of index {_shown(index_dir)}"
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV], f"${MODEL_ENV}"
    return DEFAULT_MODEL_SPEC, "the default model"


def _classify_files(
    paths, labels, templates, top, model, origin, workers, batch_size, device, cache_dir, engine
):
    from clipsearch.model import Model
    from clipsearch.zeroshot import classify as zs

    loaded = Model.load(model, device=device, cache_dir=cache_dir, engine=engine)
    _say(f"classifying with {model} ({origin})")
    classifier = zs.load_classifier(loaded.identity, labels, templates, lambda: loaded)
    return zs.classify_files(paths, loaded, classifier, top, workers, batch_size)


def _say(line: str) -> None:
    """A note for the person at the terminal: stderr, so that stdout (--json) stays data."""
    print(line, file=sys.stderr, flush=True)


def _shown(directory: Path) -> str:
    """A directory as the user would type it: relative under the current directory."""
    try:
        return str(directory.relative_to(Path.cwd()))
    except ValueError:
        return str(directory)


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
    """Accuracy per class, one row each: it reads at 80 columns, where a class-by-class matrix
    would not (rich shrinks its cells to `air…`); the full matrix is the PNG's."""
    from rich.console import Console
    from rich.table import Table

    print(f"accuracy {report.accuracy:.1%} on {report.count:,} images")
    table = Table()
    columns: list[tuple[str, JustifyMethod]] = [
        ("class", "left"),
        ("images", "right"),
        ("accuracy", "right"),
        ("most confused with", "left"),
    ]
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="fold")  # wrapped, never cut
    for i, label in enumerate(report.labels):
        row = report.confusion[i]
        accuracy = report.per_class.get(label)
        table.add_row(
            label,
            f"{int(row.sum()):,}",
            "-" if accuracy is None else f"{accuracy:.1%}",
            _most_confused(report.labels, row, i),
        )
    Console().print(table)
    where = " (working directory; choose with --plot)" if plot == DEFAULT_PLOT else ""
    print(f"confusion matrix: {plot}{where}")


def _most_confused(labels: list[str], row, true_index: int) -> str:
    """The wrong label a class's images got most often, with how many: `cat (4)`."""
    wrong = [(int(n), labels[j]) for j, n in enumerate(row) if j != true_index and n]
    if not wrong:
        return "-"
    count, label = max(wrong, key=lambda pair: pair[0])
    return f"{label} ({count:,})"


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
