"""The onnx engine: ONNX Runtime runs the towers of an ONNX model directory.

No torch, no open_clip: preprocessing is PIL + numpy (``preprocess``), tokenizing is Hugging
Face ``tokenizers`` (``tokenizer``). Each tower's session is opened on first use, so a text
query never loads the image graph.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.errors import ClipsearchError
from clipsearch.model import Model, ModelFacts, onnx_format
from clipsearch.model.preprocess import Preprocess
from clipsearch.model.spec import ModelSpec
from clipsearch.model.tokenizer import Tokenizer


class OnnxTowers:
    engine = "onnx"

    def __init__(
        self,
        directory: Path,
        cfg: onnx_format.OnnxModelConfig,
        precision: str,
        device: str,
        rebuild: Callable[[], None] | None = None,
    ) -> None:
        self.directory = directory
        self.cfg = cfg
        self.precision = precision
        self.providers = _providers(device)
        self.rebuild = rebuild  # remakes a cached export whose graph turns out damaged

    @cached_property
    def _image(self) -> Any:
        return self._session("image")

    @cached_property
    def _text(self) -> Any:
        return self._session("text")

    @cached_property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.cfg.tokenizer, self.directory)

    def encode_pixels(self, pixels: Any) -> np.ndarray:
        batch = np.ascontiguousarray(np.asarray(pixels, dtype=np.float32))
        return self._image.run(None, {"pixels": batch})[0]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._text.run(None, {"tokens": self.tokenizer(texts)})[0]

    def _session(self, tower: str) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # The thread cap a server sets for BLAS and torch (OMP_NUM_THREADS) holds here too.
        options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
        # Idle runtime threads sleep instead of spinning, so decode workers get the cores
        # between batches (as OMP_WAIT_POLICY=PASSIVE does for torch).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if tower == "text":
            # A text session mostly answers one short query, often in a process that ends
            # right after: the graph is optimized already (export), and repacking weights
            # for faster products costs more than it saves: a cold query's session and
            # first answer take a third of the time (benchmarks/RESULTS.md, "Engines").
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.add_session_config_entry("session.disable_prepacking", "1")
        path = self.directory / onnx_format.graph_name(tower, self.precision)
        try:
            return ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            message = f"cannot load {path}: {' '.join(str(exc).split())[:200]}"
        if self.rebuild is None:
            raise ClipsearchError(message)
        # A cached export damaged without changing its size: make it again, once.
        print(f"warning: rebuilding the ONNX export: {message}", file=sys.stderr)
        rebuild, self.rebuild = self.rebuild, None
        rebuild()
        return self._session(tower)


def load_onnx_model(
    spec: ModelSpec,
    directory: Path,
    device: str,
    precision: str,
    rebuild: Callable[[], None] | None = None,
) -> Model:
    cfg = onnx_format.read_config(directory)
    precision = resolve_precision(precision)
    onnx_format.check_files(directory, cfg, precision)
    identity = cfg.identity
    facts = ModelFacts(
        arch=identity.arch,
        weights=identity.weights,
        dim=identity.dim,
        image_size=identity.image_size,
        mean=identity.mean,
        std=identity.std,
        logit_scale=cfg.logit_scale,
    )
    towers = OnnxTowers(directory, cfg, precision, device, rebuild)
    return Model(spec, towers, facts, Preprocess(cfg.preprocess))


def resolve_precision(precision: str) -> str:
    """auto → fp32 (int8 becomes a default only where its agreement is measured)."""
    if precision == "auto":
        return "fp32"
    if precision not in onnx_format.PRECISIONS:
        raise ClipsearchError(
            f"precision {precision!r} is not available in the onnx engine: use auto, fp32 or "
            "int8 (fp16 and bf16 run in the torch engine)"
        )
    return precision


def _providers(device: str) -> list[Any]:
    if device in ("auto", "cpu"):
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        device_id = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    raise ClipsearchError(
        f"device {device!r} is not available to the onnx engine (onnxruntime providers: "
        f"{', '.join(ort.get_available_providers())}); use the torch engine for GPUs",
        parameter="engine",
    )
