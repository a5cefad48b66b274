"""Model specs: the one string that names a model everywhere (the CLI, env, manifests).

Parsing is pure string work, so the CLI can validate a spec without importing torch.

Forms:
  ``ARCH:TAG``            open_clip architecture + pretrained tag (``ViT-B-32:laion2b_s34b_b79k``)
                          or + a local weights file (``ViT-B-32:/models/vit-b-32.safetensors``)
  ``hf-hub:ORG/REPO``     an open_clip model on the Hugging Face hub
  ``PATH``                a checkpoint directory written by ``clipsearch train``
                          (also ``local-dir:PATH``, open_clip's own spelling)
  ``random:ARCH``         random weights (fixed seed), for tests and benchmarks only
  ``bundled:NAME``        a model trained by this project and shipped inside the package
                          (``clipsearch.bundled``): works offline, without torch
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clipsearch.errors import ClipsearchError

SpecKind = Literal["pretrained", "hf-hub", "checkpoint", "random", "bundled"]

_HF_HUB = "hf-hub:"
_LOCAL_DIR = "local-dir:"
_RANDOM = "random:"
_BUNDLED = "bundled:"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``str(spec)`` gives back its canonical form."""

    kind: SpecKind
    arch: str | None = None  # pretrained, random
    tag: str | None = None  # pretrained
    repo: str | None = None  # hf-hub
    path: Path | None = None  # checkpoint (absolute); bundled: its ONNX model directory
    name: str | None = None  # bundled

    def __str__(self) -> str:
        if self.kind == "pretrained":
            return f"{self.arch}:{self.tag}"
        if self.kind == "hf-hub":
            return f"{_HF_HUB}{self.repo}"
        if self.kind == "random":
            return f"{_RANDOM}{self.arch}"
        if self.kind == "bundled":
            return f"{_BUNDLED}{self.name}"
        return str(self.path)


def _is_explicit_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..") or Path(text).is_dir()


def parse_spec(text: str) -> ModelSpec:
    """Parse a model spec string; raise ClipsearchError with a fix when it is malformed."""
    text = text.strip()
    if not text:
        raise ClipsearchError(
            "empty model spec: give ARCH:TAG, hf-hub:ORG/REPO or a checkpoint directory"
        )
    if text.startswith(_HF_HUB):
        repo = text[len(_HF_HUB) :].strip("/")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ClipsearchError(f"bad model spec {text!r}: expected hf-hub:ORG/REPO")
        return ModelSpec("hf-hub", repo=repo)
    if text.startswith(_RANDOM):
        arch = text[len(_RANDOM) :]
        if not arch:
            raise ClipsearchError(f"bad model spec {text!r}: expected random:ARCH")
        return ModelSpec("random", arch=arch)
    if text.startswith(_BUNDLED):
        return _bundled(text[len(_BUNDLED) :])
    if text.startswith(_LOCAL_DIR):
        text = text[len(_LOCAL_DIR) :]
        return ModelSpec("checkpoint", path=Path(text).expanduser().absolute())
    if _is_explicit_path(text):
        return ModelSpec("checkpoint", path=Path(text).expanduser().absolute())
    arch, sep, tag = text.partition(":")
    if not sep and ("/" in text or os.sep in text):
        return ModelSpec("checkpoint", path=Path(text).expanduser().absolute())
    if not sep:
        raise ClipsearchError(
            f"model spec {text!r} names an architecture but no weights: use {text}:TAG for "
            f"pretrained weights, random:{text} for random weights, or a checkpoint directory"
        )
    if not arch or not tag:
        raise ClipsearchError(f"bad model spec {text!r}: expected ARCH:TAG")
    return ModelSpec("pretrained", arch=arch, tag=tag)


def _bundled(name: str) -> ModelSpec:
    from clipsearch import bundled

    names = bundled.model_names()
    if name not in names:
        raise ClipsearchError(
            f"no bundled model {name!r}: this clipsearch ships "
            f"{', '.join(_BUNDLED + n for n in names) or 'none'}"
        )
    return ModelSpec("bundled", path=bundled.model_dir(name), name=name)
