"""Options shared by several commands, defined once so they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipsearch.settings import DEFAULT_MODEL_SPEC, MODEL_ENV

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=(
            "Model spec: ARCH:TAG (open_clip pretrained), hf-hub:ORG/REPO, a checkpoint "
            f"directory from `clipsearch train`, or random:ARCH. Default: ${MODEL_ENV}, "
            f"else {DEFAULT_MODEL_SPEC}."
        ),
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N.")
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where downloaded pretrained weights are cached (default: the Hugging Face cache).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
