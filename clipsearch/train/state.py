"""Training state beside the checkpoint: what resuming needs to continue exactly.

``training_state.pt`` holds the model weights (so it is consistent on its own even if a
crash falls between files), the optimizer and grad-scaler state, the RNG state, the step
and the config. It is written atomically and read back as plain tensors only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clipsearch.base.durable import publishing
from clipsearch.errors import ClipsearchError

STATE_NAME = "training_state.pt"


def save_state(directory: Path, state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_NAME
    with publishing(directory / f".{STATE_NAME}.tmp", path) as tmp:
        torch.save(state, tmp)
    return path


def load_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE_NAME
    if not path.is_file():
        raise ClipsearchError(f"nothing to resume in {directory}: no {STATE_NAME}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which
        raise ClipsearchError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None


def rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
