"""``clipsearch train`` (train from a recipe) and ``clipsearch eval`` (evaluate a model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli.options import CacheDirOpt, DeviceOpt, JsonOpt, ModelOpt
from clipsearch.errors import ClipsearchError


def train(
    recipe: Annotated[
        Path, typer.Argument(help="Recipe TOML (see train/); its paths are relative to it.")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a recipe key, e.g. --set optim.lr=3e-4 --set data.workers=4. "
            "Paths given here are relative to the working directory. Repeatable.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output checkpoint directory. Default: runs/RECIPE-NAME.", show_default=False
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run in the output directory.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a CLIP-style model. The output directory is a checkpoint: --model DIR loads it.

    Also runs data-parallel: torchrun --nproc-per-node N -m clipsearch train RECIPE.toml
    """
    from clipsearch.train import load_config

    config = load_config(recipe, set_ or [], out)  # recipe errors before torch loads
    from clipsearch.train.loop import train as run

    result = run(config, resume=resume)
    if as_json:
        facts = {
            "checkpoint": str(result.directory),
            "step": result.step,
            "samples_per_s": result.samples_per_s,
            "metrics": result.metrics,
        }
        print(json.dumps(facts, indent=2))


def evaluate(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Labelled or captioned images: .parquet/.csv/.tsv/.jsonl file or glob, a "
            "class folder, or .tar shards.",
            show_default=False,
        ),
    ],
    model: ModelOpt = None,
    label_column: Annotated[
        str, typer.Option(help="Class-name column (default: label_name, label, class).")
    ] = "",
    caption_column: Annotated[
        str, typer.Option(help="Caption column (default: caption, title, text).")
    ] = "",
    image_column: Annotated[str, typer.Option(help="Image bytes or path column.")] = "",
    captions: Annotated[
        Path | None,
        typer.Option(help="A separate captions table, joined on --key.", show_default=False),
    ] = None,
    key: Annotated[str, typer.Option(help="Join column of --captions.")] = "image_id",
    split: Annotated[str, typer.Option(help="Keep rows whose 'split' column equals this.")] = "",
    templates: Annotated[
        str, typer.Option(help="Zero-shot prompt set: default (80), simple (7), photo (12).")
    ] = "default",
    limit: Annotated[int, typer.Option(min=0, help="Evaluate the first N images (0: all).")] = 0,
    queries: Annotated[
        Path | None,
        typer.Option(
            help="CSV of free-text queries with the class each should find (columns: "
            "query,label); reports each one's precision@K on the labelled images.",
            show_default=False,
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="K of the queries' precision@K.")] = 20,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 256,
    workers: Annotated[int, typer.Option(min=0, help="Decoding processes.")] = 2,
    flip: Annotated[
        bool,
        typer.Option(
            "--flip",
            help="Test-time augmentation: embed each image and its mirror image and average "
            "the two (twice the model time).",
        ),
    ] = False,
    shift: Annotated[
        int,
        typer.Option(
            min=0,
            help="Test-time augmentation: also embed copies moved by this many pixels (down-"
            "right and up-left, reflect-padded) and average (mirrored too with --flip; 1 suits "
            "a model trained with data.translate).",
        ),
    ] = 0,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Zero-shot top-1/top-5 on labelled images; recall@1/5/10 both ways on captioned ones."""
    from clipsearch.model import Model
    from clipsearch.train.config import SourceConfig
    from clipsearch.train.evaluate import evaluate as run
    from clipsearch.train.sources import load_source
    from clipsearch.zeroshot.templates import get_templates

    source_cfg = SourceConfig(
        path=str(data),
        label_column=label_column,
        caption_column=caption_column,
        image_column=image_column,
        captions=str(captions) if captions else "",
        key_column=key,
        split=split,
        limit=limit,
    )
    source = load_source(source_cfg)
    query_list = read_queries(queries, source.classes) if queries else []
    loaded = Model.load(model, device=device, cache_dir=cache_dir)
    result = run(
        source,
        loaded.preprocess,
        loaded.embed_pixels,
        lambda texts: loaded.embed_texts(texts, batch_size=batch_size),
        get_templates(templates),
        batch_size,
        workers,
        examples=0,
        queries=query_list,
        k=k,
        flip=flip,
        shift=shift,
    )
    metrics = {"model": str(loaded.spec), "data": str(data), **result.metrics}
    per_query = [
        {"query": text, "label": label, f"precision_at_{k}": precision}
        for (text, label), precision in zip(query_list, result.query_precision, strict=True)
    ]
    if as_json:
        print(json.dumps({**metrics, "queries": per_query} if queries else metrics, indent=2))
        return
    for name, value in metrics.items():
        shown = f"{value:.2f}" if isinstance(value, float) else value
        print(f"{name:>24}  {shown}")
    for row in per_query:
        print(f"{row[f'precision_at_{k}']:6.1f}%  {row['query']}  ({row['label']})")


def read_queries(path: Path, classes: list[str] | None) -> list[tuple[str, str]]:
    """(query, class name) rows of a CSV with columns query,label; labels must be classes."""
    import csv

    if not classes:
        raise ClipsearchError("--queries needs labelled images (a class-name column)")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [(row["query"].strip(), row["label"].strip()) for row in csv.DictReader(f)]
    except OSError as exc:
        raise ClipsearchError(f"cannot read --queries {path}: {exc.strerror}") from None
    except (KeyError, AttributeError):
        raise ClipsearchError(f"--queries {path}: needs the columns query,label") from None
    unknown = sorted({label for _, label in rows} - set(classes))
    if unknown:
        raise ClipsearchError(f"--queries {path}: labels not among the classes: {unknown}")
    if not rows:
        raise ClipsearchError(f"--queries {path}: no queries")
    return rows
