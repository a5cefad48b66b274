"""``clipsearch train``: contrastive training of CLIP-style models from a TOML recipe.

    from clipsearch.train import load_config, train
    result = train(load_config("train/cifar10-tiny.toml", ["optim.epochs=0.1"]))

Modules: config (recipe -> TrainConfig), sources (datasets on disk), data (batches),
model (build/save), loss, step (one forward/backward), optim, loop (``train``),
evaluate (zero-shot, retrieval), report (metrics, progress, plots), state (resume).
Importing this package is cheap; torch loads with ``train``.
May import: ``base``, ``model``, ``ingest``, ``zeroshot``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clipsearch.train.config import TrainConfig, load_config

if TYPE_CHECKING:
    from clipsearch.train.loop import RunResult, train

__all__ = ["RunResult", "TrainConfig", "load_config", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "RunResult"):
        from clipsearch.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'clipsearch.train' has no attribute {name!r}")
