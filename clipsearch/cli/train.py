"""``clipsearch train`` (train from a recipe) and ``clipsearch eval`` (evaluate a model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli.options import CacheDirOpt, DeviceOpt, JsonOpt, ModelOpt


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

    Also runs data-parallel: torchrun --nproc-per-node N -m clipsearch.train RECIPE.toml
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
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 256,
    workers: Annotated[int, typer.Option(min=0, help="Decoding processes.")] = 2,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Zero-shot top-1/top-5 on labelled images; recall@1/5/10 both ways on captioned ones."""
    from clipsearch.model import Model
    from clipsearch.train.config import SourceConfig
    from clipsearch.train.evaluate import evaluate as run
    from clipsearch.train.sources import load_source
    from clipsearch.zeroshot import get_templates

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
    )
    metrics = {"model": str(loaded.spec), "data": str(data), **result.metrics}
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    for name, value in metrics.items():
        shown = f"{value:.2f}" if isinstance(value, float) else value
        print(f"{name:>20}  {shown}")


def standalone() -> None:
    """``python -m clipsearch.train``: the train command alone (what torchrun launches)."""
    from clipsearch.cli.main import run

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(train)
    run(app)
