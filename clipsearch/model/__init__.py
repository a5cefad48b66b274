"""The model layer: load any model spec, embed images and texts into one normalized space.

``Model.load(spec)`` is the only way the rest of clipsearch gets a model, so every command
accepts the same specs (see ``clipsearch.model.spec``) and every index can pin the exact
weights it was built with (``Model.identity``, a ``ModelIdentity``).

Two engines run the towers (``clipsearch.model.engines`` chooses):
- ``onnx``: ONNX Runtime on graphs exported once per model (``clipsearch.model.export``);
  the default on CPU. It needs neither torch nor open_clip.
- ``torch``: open_clip itself (``clipsearch.model.torch_engine``): training, GPU, export.
Importing this package imports neither. ``check_same_model`` is the one rule that refuses a
model whose embeddings are not comparable with an index's or a collection's.

May import: ``base`` (and ``errors``, ``settings``, ``bundled``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast

import numpy as np

from clipsearch.errors import ClipsearchError
from clipsearch.model.identity import ModelIdentity
from clipsearch.model.spec import ModelSpec, parse_spec
from clipsearch.settings import default_model_spec

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.model.torch_engine import ClipModule, TorchTowers

ImageInput: TypeAlias = "Image.Image | str | os.PathLike"


class Towers(Protocol):
    """What an engine provides: raw (not yet normalized) embeddings of pixels and texts."""

    engine: str
    precision: str

    def encode_pixels(self, pixels: Any) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelFacts:
    """What describes a model whatever engine runs it (an ONNX export carries them along)."""

    arch: str | None
    weights: str  # "sha256:...", "pretrained:TAG" or "random:seed=N"
    dim: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    logit_scale: float


class Model:
    """A CLIP-style model ready for inference: ``embed_images`` and ``embed_texts``.

    Embeddings are float32 numpy arrays of shape (n, dim) with L2-normalized rows, so the
    inner product of two rows is their cosine similarity.
    """

    def __init__(
        self,
        spec: ModelSpec,
        towers: Towers,
        facts: ModelFacts,
        preprocess: Callable[[Image.Image], np.ndarray],
    ) -> None:
        self.spec = spec
        self.towers = towers
        self.facts = facts
        self.preprocess = preprocess  # PIL image → float32 (3, H, W); picklable

    @classmethod
    def load(
        cls,
        spec: str | ModelSpec | None = None,
        device: str = "auto",
        precision: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        engine: str = "auto",
    ) -> Model:
        """Load a model by spec (default: $CLIPSEARCH_MODEL or the built-in default).

        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N".
        precision: "auto" (fp32 on CPU, bf16/fp16 on GPU), "fp32", "fp16", "bf16" (torch),
        "int8" (onnx).
        cache_dir: where downloaded pretrained weights are cached.
        engine: "auto" ($CLIPSEARCH_ENGINE, else onnx on CPU and torch on GPU), "onnx",
        "torch".
        """
        from clipsearch.model import engines

        if not isinstance(spec, ModelSpec):
            spec = parse_spec(spec or default_model_spec())
        cache = str(cache_dir) if cache_dir else None
        chosen = engines.choose(spec, engine, device)
        if chosen.engine == "onnx":
            from clipsearch.model import export
            from clipsearch.model.onnx_engine import load_onnx_model

            if chosen.onnx_dir is not None:
                return load_onnx_model(spec, chosen.onnx_dir, device, precision)
            directory = export.ensure_cached_export(spec, cache, precision)

            def rebuild() -> None:
                export.ensure_cached_export(spec, cache, precision, rebuild=True)

            return load_onnx_model(spec, directory, device, precision, rebuild)
        return cls.from_torch(spec, device, precision, cache)

    @classmethod
    def from_torch(
        cls,
        spec: ModelSpec,
        device: str = "auto",
        precision: str = "auto",
        cache: str | None = None,
    ) -> Model:
        from clipsearch.model import hub

        # Before torch and open_clip are imported (seconds): weights that are neither cached
        # nor downloadable fail at once.
        hub.fail_fast_when_unavailable(spec, cache)
        from clipsearch.model import torch_engine

        towers = torch_engine.load_towers(spec, device, precision, cache)
        cfg = towers.preprocess_cfg
        size = cfg["size"]
        facts = ModelFacts(
            arch=towers.arch,
            weights=towers.weights_id,
            dim=int(towers.model_cfg["embed_dim"]),
            image_size=int(size if isinstance(size, int) else max(size)),
            mean=tuple(float(x) for x in cfg["mean"]),
            std=tuple(float(x) for x in cfg["std"]),
            logit_scale=towers.logit_scale,
        )
        return cls(spec, towers, facts, towers.preprocess())

    # -- facts -----------------------------------------------------------------------------

    @property
    def engine(self) -> str:
        return self.towers.engine

    @property
    def precision(self) -> str:
        return self.towers.precision

    @property
    def dim(self) -> int:
        return self.facts.dim

    @property
    def image_size(self) -> int:
        return self.facts.image_size

    @property
    def logit_scale(self) -> float:
        """exp(learned temperature parameter): multiply cosines by it to get logits."""
        return self.facts.logit_scale

    @property
    def identity(self) -> ModelIdentity:
        """Pins exactly which weights these are, so an index can refuse a different model."""
        facts = self.facts
        return ModelIdentity(
            str(self.spec),
            facts.arch,
            facts.weights,
            facts.dim,
            facts.image_size,
            facts.mean,
            facts.std,
        )

    @property
    def module(self) -> ClipModule:
        """The torch module (torch engine only): for training and export."""
        return self.torch_towers.module

    @property
    def torch_towers(self) -> TorchTowers:
        """The torch engine's towers, with open_clip's module, tokenizer and preprocessing
        settings (torch engine only): for training and export."""
        if self.engine != "torch":
            raise ClipsearchError(
                f"model '{self.spec}' runs in the {self.engine} engine; this needs the torch "
                "engine (load it with engine='torch')",
                parameter="engine",
            )
        return cast("TorchTowers", self.towers)  # the torch engine's towers

    # -- embedding -------------------------------------------------------------------------

    def embed_images(self, images: Sequence[ImageInput], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images or image paths."""
        from clipsearch.base.images import DecodeError, load_image
        from clipsearch.model.preprocess import is_pil_image

        def to_pixels(item: ImageInput) -> np.ndarray:
            if is_pil_image(item):
                return self.preprocess(item.convert("RGB"))
            try:
                image, _ = load_image(item, min_side=self.image_size)
            except DecodeError as exc:
                raise ClipsearchError(f"cannot read image {item}: {exc.reason}") from None
            return self.preprocess(image)

        chunks = [
            self.embed_pixels(np.stack([to_pixels(x) for x in images[i : i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ]
        return self._concat(chunks)

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        """Embed a batch already transformed by ``preprocess`` (shape (n, 3, H, W))."""
        return _normalized(self.towers.encode_pixels(pixels))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        chunks = [
            _normalized(self.towers.encode_texts(list(texts[i : i + batch_size])))
            for i in range(0, len(texts), batch_size)
        ]
        return self._concat(chunks)

    def _concat(self, chunks: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    # -- saving ----------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write a checkpoint directory that ``Model.load(directory)`` reads back."""
        return self.torch_towers.save(Path(directory), str(self.spec))


@dataclass(frozen=True)
class BuiltWith:
    """What a stored collection of embeddings (an image index, a text collection) was made
    with, for the one rule below: a model whose embeddings are not comparable is refused."""

    identity: ModelIdentity
    what: str  # "index /path", "text collection /path"
    start_over: str  # what the user can do instead: "index into a new directory"

    @classmethod
    def image_index(cls, identity: ModelIdentity, index_dir: os.PathLike | str) -> BuiltWith:
        """An image index's, as indexing and searching both check it."""
        return cls(identity, f"index {index_dir}", "index into another directory with that model")


def check_same_model(built_with: BuiltWith, requested: str, loaded: ModelIdentity | None) -> None:
    """Refuse ``requested`` (its identity ``loaded`` once loaded, None before: then only
    specs that surely name other weights are refused) for a collection ``built_with``."""
    built = built_with.identity.spec
    if loaded is None:
        if not surely_different(requested, built):
            return
    elif loaded.same_weights(built_with.identity):
        return
    elif requested == built:
        raise ClipsearchError(
            f"the weights of model '{built}' changed since {built_with.what} was built: "
            f"{built_with.start_over}"
        )
    raise ClipsearchError(
        f"{built_with.what} was built with model '{built}', not '{requested}': leave the "
        f"model out (it knows its model), or {built_with.start_over}",
        parameter="model",
    )


def load_for(built_with: BuiltWith, spec: str, **options: Any) -> Model:
    """``Model.load(spec, **options)`` for a collection ``built_with``, refused (before
    loading when the specs tell) if its embeddings are not comparable."""
    check_same_model(built_with, spec, None)  # known without loading (or exporting) it
    model = Model.load(spec, **options)
    check_same_model(built_with, spec, model.identity)
    return model


def surely_different(a: str, b: str) -> bool:
    """True when two specs cannot name the same weights, known without loading either:
    different pretrained tags, random architectures, hub repos or bundled models. Paths can (a moved
    checkpoint, an ONNX export of it), so only loading tells."""

    def fixed(spec: ModelSpec) -> bool:
        return spec.kind in ("random", "hf-hub", "bundled") or (
            spec.kind == "pretrained" and not os.path.isfile(spec.tag or "")
        )

    first, second = parse_spec(a), parse_spec(b)
    return fixed(first) and fixed(second) and str(first) != str(second)


def _normalized(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, 1e-12)
