"""``clipsearch export``: a model as a self-contained ONNX model directory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli.options import CacheDirOpt, JsonOpt
from clipsearch.errors import ClipsearchError


def export(
    model: Annotated[
        str,
        typer.Argument(
            help="Model spec to export: ARCH:TAG, hf-hub:ORG/REPO, a checkpoint directory, "
            "random:ARCH, or an ONNX model directory already (bundled:NAME, an earlier "
            "export), which is copied.",
            show_default=False,
        ),
    ],
    out_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder to write (replaced if it holds an earlier export).", show_default=False
        ),
    ],
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a model's towers to ONNX: `--model OUT_DIR` then runs without torch.

    The folder holds the image and text graphs, the tokenizer's file, the preprocessing
    settings and the model's identity, so indexes built with the original model accept it.
    Needs torch and open_clip (the torch extra); loading the result needs neither. A
    model that is an ONNX model directory already (bundled:NAME) is copied, without torch.
    """
    from clipsearch.model import export as exporter
    from clipsearch.model.onnx_format import read_config
    from clipsearch.model.spec import parse_spec

    spec = parse_spec(model)
    start = time.perf_counter()
    if out_dir.exists() and not out_dir.is_dir():
        raise ClipsearchError(f"{out_dir} exists and is not a folder")
    directory = exporter.export_model(spec, out_dir, str(cache_dir) if cache_dir else None)
    graphs = read_config(directory).graphs
    seconds = time.perf_counter() - start
    if as_json:
        print(
            json.dumps(
                {
                    "model": str(spec),
                    "directory": str(directory),
                    "graphs": graphs,
                    "seconds": round(seconds, 2),
                },
                indent=2,
            )
        )
        return
    sizes = ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in graphs.items())
    print(f"exported '{spec}' to {directory} in {seconds:.1f} s ({sizes})")
    print(f"use it with: --model {directory}")
