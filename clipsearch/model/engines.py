"""Which engine runs a model's towers: ONNX Runtime on CPU, torch on a GPU.

Choosing must stay cheap: it imports neither torch nor onnxruntime unless a GPU device node
is present, so a query on a CPU box never pays for torch.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from clipsearch.errors import ClipsearchError
from clipsearch.model import onnx_format
from clipsearch.model.spec import ModelSpec
from clipsearch.settings import ENGINE_ENV, ENGINES

TORCH_EXTRA = "pip install 'clipsearch[torch]'"


@dataclass(frozen=True)
class Choice:
    engine: str  # "onnx" or "torch"
    onnx_dir: Path | None = None  # the spec names an ONNX model directory
    reason: str = ""


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def asked_engine(engine: str) -> str:
    """The engine asked for: the argument, else $CLIPSEARCH_ENGINE, else "auto"; checked."""
    name = engine if engine != "auto" else os.environ.get(ENGINE_ENV) or "auto"
    if name not in ENGINES:
        raise ClipsearchError(f"unknown engine {name!r}: use {', '.join(ENGINES)}")
    return name


def choose(spec: ModelSpec, engine: str = "auto", device: str = "auto") -> Choice:
    """The engine for ``spec``: an explicit choice, else $CLIPSEARCH_ENGINE, else onnx
    on CPU (from an ONNX directory, the export cache, or a new export) and torch on a GPU."""
    engine = asked_engine(engine)
    onnx_dir = spec.path if spec.path and onnx_format.is_onnx_dir(spec.path) else None
    if onnx_dir is not None:
        if engine == "torch":
            what = "a bundled model" if spec.kind == "bundled" else "an ONNX model directory"
            raise ClipsearchError(
                f"'{spec}' is {what}: it runs in the onnx engine only "
                "(the torch engine needs the checkpoint it was exported from)"
            )
        return Choice("onnx", onnx_dir, "ONNX model directory")
    return default_choice(engine, device)


def default_choice(engine: str = "auto", device: str = "auto") -> Choice:
    """The engine for a model that is not an ONNX directory (what `clipsearch info` shows)."""
    engine = asked_engine(engine)
    if engine == "auto":
        if device.startswith("cuda") or (device == "auto" and gpu_available()):
            return Choice("torch", reason="GPU")
        if not installed("onnxruntime"):
            return Choice("torch", reason="onnxruntime is not installed")
        return Choice("onnx", reason="CPU")
    if engine == "torch" and not installed("torch"):
        raise ClipsearchError(f"the torch engine needs torch and open_clip: {TORCH_EXTRA}")
    if engine == "onnx" and not installed("onnxruntime"):
        raise ClipsearchError("the onnx engine needs onnxruntime: pip install onnxruntime")
    return Choice(engine, reason=f"asked for {engine}")


def gpu_available() -> bool:
    """Whether torch sees a CUDA GPU. The device nodes are checked first, so a CPU box
    never imports torch to find out."""
    if not installed("torch"):
        return False
    if not any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")):
        return False
    import torch

    return bool(torch.cuda.is_available())
