"""Checkpoint directories: the on-disk form of a model that a spec naming the directory loads.

The layout is open_clip's own (as on the Hugging Face hub and open_clip's ``local-dir:``):
``open_clip_config.json`` ({"model_cfg", "preprocess_cfg", "clipsearch"}) and
``open_clip_model.safetensors``. A checkpoint can therefore be pushed to the hub as is.
Weights are only ever read as plain tensors: safetensors, or ``torch.load(weights_only=True)``
for legacy ``.bin``/``.pt`` files, so a checkpoint cannot run code on load.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from clipsearch.base.durable import publishing
from clipsearch.errors import ClipsearchError

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
FORMAT_VERSION = 1
# Training state (optimizer, RNG) may sit beside the weights; it is never model weights.
_NOT_WEIGHTS_PREFIX = "training_state"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def read_config(directory: Path) -> dict[str, Any]:
    """Read and check a checkpoint directory's config; errors name the directory."""
    if not directory.is_dir():
        raise ClipsearchError(
            f"no checkpoint directory at {directory} (a model spec that is a path must be a "
            "directory written by `clipsearch train`)"
        )
    config_path = directory / CONFIG_NAME
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        message = f"{directory} is not a checkpoint: {CONFIG_NAME} is missing"
        raise ClipsearchError(message) from None
    except (OSError, ValueError) as exc:
        raise ClipsearchError(f"cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict) or "model_cfg" not in config:
        raise ClipsearchError(f"{config_path} is not an open_clip config: no 'model_cfg'")
    return config


def find_weights(directory: Path) -> Path:
    """The weights file of a checkpoint directory, preferring safetensors."""
    preferred = directory / WEIGHTS_NAME
    if preferred.is_file():
        return preferred
    candidates = sorted(directory.glob("*.safetensors")) + sorted(
        p for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES
    )
    candidates = [p for p in candidates if not p.name.startswith(_NOT_WEIGHTS_PREFIX)]
    if not candidates:
        raise ClipsearchError(f"{directory} is not a checkpoint: no {WEIGHTS_NAME}")
    return candidates[0]


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a weights file as plain tensors; refuse anything that needs pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ClipsearchError(f"cannot read weights {path}: {exc}") from None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ClipsearchError(
            f"refusing to load {path}: it needs arbitrary pickled code, not just tensors "
            "(convert it to safetensors from a trusted environment)"
        ) from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise ClipsearchError(f"cannot read weights {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ClipsearchError(f"cannot read weights {path}: not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def save_checkpoint(
    directory: Path,
    state_dict: dict[str, Any],
    model_cfg: dict[str, Any],
    preprocess_cfg: dict[str, Any],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write weights then config, each atomically, so a reader never sees a torn checkpoint."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.float() if v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in state_dict.items()
    }
    with publishing(directory / f".{WEIGHTS_NAME}.tmp", directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp))
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": preprocess_cfg,
        "clipsearch": {"format_version": FORMAT_VERSION, **(info or {})},
    }
    with publishing(directory / f".{CONFIG_NAME}.tmp", directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config, indent=2, default=list), encoding="utf-8")
    return directory
