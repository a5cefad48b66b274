"""The ONNX model directory: what ``clipsearch export`` writes and the onnx engine reads.

    clipsearch_onnx.json    format_version, the source model's identity and logit scale,
                            preprocessing and tokenizer settings, graph files with sizes
    image.onnx, text.onnx   the towers in fp32: pixels (n, 3, H, W) float32 → (n, dim);
                            tokens (n, context_length) int64 → (n, dim); not normalized;
                            each graph's weights sit beside it in GRAPH.data; graphs are
                            optimized for ONNX Runtime (its "extended" level, so they may
                            use its own operators) and need no optimizing when loaded
    image.int8.onnx         the image tower with int8 weights (precision int8), when made;
                            int8 runs the fp32 text tower
    tokenizer.json          the tokenizer (Hugging Face tokenizers' format)

The directory is self-contained: it loads without torch, open_clip or the checkpoint it
came from, and its embeddings carry the source model's identity, so indexes built by either
engine answer queries embedded by the other. Reading it needs only the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipsearch.base.durable import read_json_object
from clipsearch.errors import ClipsearchError
from clipsearch.model.identity import ModelIdentity
from clipsearch.model.preprocess import PreprocessConfig
from clipsearch.model.tokenizer import TokenizerConfig

CONFIG_NAME = "clipsearch_onnx.json"
FORMAT_VERSION = 2  # 2: graphs saved optimized for ONNX Runtime
PRECISIONS = ("fp32", "int8")
TOWERS = ("image", "text")


def graph_name(tower: str, precision: str) -> str:
    """The graph file of ``tower`` at ``precision``.

    int8 quantizes the image tower only: that is where indexing spends its time, while the
    text tower answers one short query at a time, and its int8 form reorders text → image
    results (top-10 overlap 0.70 for the MiniLM tower, benchmarks/RESULTS.md).
    """
    if precision == "fp32" or tower == "text":
        return f"{tower}.onnx"
    return f"{tower}.{precision}.onnx"


@dataclass(frozen=True)
class OnnxModelConfig:
    identity: ModelIdentity  # the source model's
    logit_scale: float
    preprocess: PreprocessConfig
    tokenizer: TokenizerConfig
    graphs: dict[str, int]  # file name → size in bytes: every graph and its .data file

    def to_json(self) -> dict[str, Any]:
        data = {**asdict(self), "identity": self.identity.as_dict()}
        return {"format_version": FORMAT_VERSION, **data}

    def has(self, precision: str) -> bool:
        return all(graph_name(tower, precision) in self.graphs for tower in TOWERS)


def is_onnx_dir(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file()


def read_config(directory: Path) -> OnnxModelConfig:
    """Read and check a directory's config; errors are one line naming the file."""
    path = directory / CONFIG_NAME
    data = read_json_object(path, "ONNX model config")
    if data is None:
        raise ClipsearchError(f"{directory} is not an ONNX model directory: no {CONFIG_NAME}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ClipsearchError(
            f"{path} has format_version {version!r}; this clipsearch reads {FORMAT_VERSION}: "
            "export the model again with `clipsearch export`"
        )
    try:
        pre, tok = data["preprocess"], data["tokenizer"]
        return OnnxModelConfig(
            identity=ModelIdentity.from_dict(data["identity"], f"ONNX model config {path}"),
            logit_scale=float(data["logit_scale"]),
            preprocess=PreprocessConfig(
                int(pre["size"]),
                tuple(pre["mean"]),
                tuple(pre["std"]),
                pre["interpolation"],
                pre["resize_mode"],
            ),
            tokenizer=TokenizerConfig(**tok),
            graphs={str(k): int(v) for k, v in data["graphs"].items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ClipsearchError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None


def check_files(directory: Path, cfg: OnnxModelConfig, precision: str) -> None:
    """The graphs for ``precision`` (with their weights files) and the tokenizer file exist
    with their recorded sizes."""
    if not cfg.has(precision):
        raise ClipsearchError(f"{directory} has no {precision} graphs")
    for tower in TOWERS:
        name = graph_name(tower, precision)
        for file in (name, f"{name}.data"):
            if file not in cfg.graphs:
                continue
            path = directory / file
            size = path.stat().st_size if path.is_file() else None
            if size != cfg.graphs[file]:
                found = "missing" if size is None else f"{size} bytes, not {cfg.graphs[file]}"
                raise ClipsearchError(f"{path} is damaged ({found})")
    if not (directory / cfg.tokenizer.file).is_file():
        raise ClipsearchError(f"{directory / cfg.tokenizer.file} is missing")
