"""Options shared by several commands, defined once so they read the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clipsearch.settings import (
    DEFAULT_INDEX_NAME,
    DEFAULT_MODEL_SPEC,
    ENGINE_ENV,
    ENGINES,
    INDEX_ENV,
    INDEXES_DIR,
    MODEL_ENV,
    PRECISIONS,
)

if TYPE_CHECKING:
    from clipsearch.store.vectors import VectorIndexConfig

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=(
            "Model spec: ARCH:TAG (open_clip pretrained), hf-hub:ORG/REPO, a checkpoint "
            "directory from `clipsearch train`, an ONNX directory from `clipsearch export`, "
            "bundled:cifar10-small (shipped, offline) or random:ARCH. Default: "
            f"${MODEL_ENV}, else {DEFAULT_MODEL_SPEC}."
        ),
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N.")
]


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        envvar=ENGINE_ENV,
        callback=_one_of(ENGINES),
        help=(
            "What runs the model: auto (ONNX Runtime on CPU, exported once per model and "
            "cached; torch on a GPU), onnx, or torch."
        ),
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        callback=_one_of(PRECISIONS),
        help=(
            "Model precision: auto (fp32 on CPU, bf16/fp16 on GPU), fp32, fp16, bf16 (torch), "
            "int8 (onnx: weights quantized, made once from the fp32 export). Embeddings of "
            "one model at any precision are comparable."
        ),
    ),
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
IndexOpt = Annotated[
    str | None,
    typer.Option(
        "--index",
        "-i",
        help=(
            f"Index name (→ {INDEXES_DIR}/NAME) or directory. Default: ${INDEX_ENV}, "
            f"else {INDEXES_DIR}/{DEFAULT_INDEX_NAME}."
        ),
        show_default=False,
    ),
]


def _server_token(value: str | None) -> str | None:
    from clipsearch.server.auth import check_token

    if value is None:
        return None
    try:
        return check_token(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="CLIPSEARCH_TOKEN",
        callback=_server_token,
        help=(
            "The server's secret, which every request must carry. Prefer $CLIPSEARCH_TOKEN: "
            "other users of the machine can read command lines."
        ),
        show_default=False,
    ),
]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, flag: str) -> int:
    """'512M', '2G', '1.5g' or a byte count → bytes; a bad one is an error of ``flag``."""
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    number = value[: len(value) - len(unit)]
    try:
        size = int(float(number) * _UNITS[unit])
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a size such as 512M or 2G", param_hint=flag
        ) from None
    if size <= 0:
        raise typer.BadParameter(f"{text!r} is not positive", param_hint=flag)
    return size


MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(
        help="Memory the vector index may use, e.g. 2G (picks SQ8 or PQ storage to fit).",
        show_default=False,
    ),
]
FlatThresholdOpt = Annotated[
    int,
    typer.Option(min=1, help="Exact search up to this many images; approximate (IVF) above."),
]


def vector_index_config(max_memory: str | None, flat_threshold: int) -> VectorIndexConfig:
    from clipsearch.store.vectors import VectorIndexConfig

    return VectorIndexConfig(
        flat_threshold=flat_threshold,
        max_memory=parse_size(max_memory, "--max-memory") if max_memory else None,
    )
