"""The model layer: load any model spec, embed images and texts into one normalized space.

``Model.load(spec)`` is the only way the rest of clipsearch gets a model, so every command
accepts the same specs (see ``clipsearch.spec``) and every index can pin the exact weights
it was built with (``Model.identity``).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from clipsearch import architectures, checkpoint
from clipsearch.errors import ClipsearchError
from clipsearch.hub import endpoint_host, hub_access
from clipsearch.settings import default_model_spec
from clipsearch.spec import ModelSpec, parse_spec

RANDOM_SEED = 0
_OFFLINE_FIX = (
    "point --model (or CLIPSEARCH_MODEL) at a local checkpoint directory, such as one "
    "written by `clipsearch train`, or connect once so the weights are cached"
)

ImageInput = Image.Image | str | os.PathLike


@dataclass
class _Built:
    """What a loader returns: the network and the facts needed to describe and save it."""

    module: torch.nn.Module
    model_cfg: dict[str, Any]
    weights_id: str
    arch: str | None
    tokenizer_name: str


class Model:
    """A CLIP-style model ready for inference: ``embed_images`` and ``embed_texts``.

    Embeddings are float32 numpy arrays of shape (n, dim) with L2-normalized rows, so the
    inner product of two rows is their cosine similarity.
    """

    def __init__(
        self, built: _Built, spec: ModelSpec, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.spec = spec
        self.module = built.module.eval()
        self.device = device
        self.dtype = dtype
        self.arch = built.arch
        self.model_cfg = built.model_cfg
        self.preprocess_cfg: dict[str, Any] = dict(open_clip.get_model_preprocess_cfg(self.module))
        self.preprocess: Callable[[Image.Image], torch.Tensor] = image_transform_v2(
            PreprocessCfg(**self.preprocess_cfg), is_train=False
        )
        self.tokenizer = open_clip.get_tokenizer(built.tokenizer_name)
        self._weights_id = built.weights_id

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        spec: str | ModelSpec | None = None,
        device: str = "auto",
        precision: str = "auto",
        cache_dir: str | os.PathLike | None = None,
    ) -> Model:
        """Load a model by spec (default: $CLIPSEARCH_MODEL or the built-in default).

        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N".
        precision: "auto" (bf16/fp16 on GPU, fp32 on CPU), "fp32", "fp16", "bf16".
        """
        if not isinstance(spec, ModelSpec):
            spec = parse_spec(spec or default_model_spec())
        torch_device = resolve_device(device)
        precision = resolve_precision(precision, torch_device)
        cache = str(cache_dir) if cache_dir else None
        architectures.register()
        with _quiet_open_clip_logs():
            built = _LOADERS[spec.kind](spec, cache)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        built.module.to(device=torch_device, dtype=dtype)
        return cls(built, spec, torch_device, dtype)

    # -- facts -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg["size"]
        return int(size if isinstance(size, int) else max(size))

    @property
    def logit_scale(self) -> float:
        """exp(learned temperature parameter): multiply cosines by it to get logits."""
        return float(self.module.logit_scale.detach().float().exp().item())

    @property
    def identity(self) -> dict[str, Any]:
        """Pins exactly which weights these are, so an index can refuse a different model."""
        return {
            "spec": str(self.spec),
            "arch": self.arch,
            "weights": self._weights_id,
            "dim": self.dim,
            "image_size": self.image_size,
            "mean": [float(x) for x in self.preprocess_cfg["mean"]],
            "std": [float(x) for x in self.preprocess_cfg["std"]],
        }

    # -- embedding -------------------------------------------------------------------------

    def embed_images(self, images: Sequence[ImageInput], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images or image paths."""
        from clipsearch.decode import DecodeError, load_image

        def to_pixels(item: ImageInput) -> torch.Tensor:
            if isinstance(item, Image.Image):
                return self.preprocess(item.convert("RGB"))
            try:
                image, _ = load_image(item, min_side=self.image_size)
            except DecodeError as exc:
                raise ClipsearchError(f"cannot read image {item}: {exc.reason}") from None
            return self.preprocess(image)

        chunks = [
            self.embed_pixels(torch.stack([to_pixels(x) for x in images[i : i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ]
        return self._concat(chunks)

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a batch already transformed by ``preprocess`` (shape (n, 3, H, W))."""
        with torch.inference_mode():
            features = self.module.encode_image(pixels.to(self.device, self.dtype))
            return _normalized_numpy(features)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        chunks = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i : i + batch_size])).to(self.device)
            with torch.inference_mode():
                chunks.append(_normalized_numpy(self.module.encode_text(tokens)))
        return self._concat(chunks)

    def _concat(self, chunks: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    # -- saving ----------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write a checkpoint directory that ``Model.load(directory)`` reads back."""
        return checkpoint.save_checkpoint(
            Path(directory),
            self.module.state_dict(),
            self.model_cfg,
            self.preprocess_cfg,
            {"arch": self.arch, "source": str(self.spec)},
        )


def identities_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same weights and preprocessing, wherever the spec pointed (a moved checkpoint matches)."""

    def pinned(identity: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in identity.items() if k != "spec"}

    return pinned(a) == pinned(b)


def _normalized_numpy(features: torch.Tensor) -> np.ndarray:
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy()


def resolve_device(device: str) -> torch.device:
    """auto → CUDA when available, else CPU; a CUDA device that is not there is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ClipsearchError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ClipsearchError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto → bf16 (or fp16) on GPU, fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision not in ("fp32", "fp16", "bf16"):
        raise ClipsearchError(f"unknown precision {precision!r}: use auto, fp32, fp16 or bf16")
    return precision


@contextmanager
def _quiet_open_clip_logs() -> Iterator[None]:
    """open_clip logs errors and warnings on the root logger; we report failures ourselves."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(previous)


def _check_arch(spec: ModelSpec) -> str:
    arch = spec.arch or ""
    known = open_clip.list_models()
    if arch in known:
        return arch
    close = difflib.get_close_matches(arch, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `clipsearch models` lists them"
    raise ClipsearchError(f"cannot load model '{spec}': unknown architecture {arch!r}{hint}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _load_random(spec: ModelSpec, cache_dir: str | None) -> _Built:
    arch = _check_arch(spec)
    # A fixed seed makes random:ARCH the same weights in every process (index, then query).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        try:
            module = open_clip.create_model(arch, pretrained_text=False, cache_dir=cache_dir)
        except Exception as exc:
            raise ClipsearchError(f"cannot build model '{spec}': {_one_line(exc)}") from None
    model_cfg = open_clip.get_model_config(arch)
    return _Built(module, model_cfg, f"random:seed={RANDOM_SEED}", arch, arch)


def _load_pretrained(spec: ModelSpec, cache_dir: str | None) -> _Built:
    arch = _check_arch(spec)
    tag = spec.tag or ""
    model_cfg = open_clip.get_model_config(arch)
    if os.path.isfile(tag):
        weights_id = "sha256:" + checkpoint.sha256_file(Path(tag))
        module = _create_with_weights(spec, Path(tag), arch)
        return _Built(module, model_cfg, weights_id, arch, arch)
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        known = f"known tags: {', '.join(tags)}" if tags else f"{arch} has no pretrained tags"
        raise ClipsearchError(
            f"cannot load model '{spec}': unknown pretrained tag {tag!r} ({known})"
        )
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    model_cfg["quick_gelu"] = quick_gelu or model_cfg.get("quick_gelu", False)
    source = tag_cfg.get("hf_hub") or tag_cfg.get("url") or "?"
    with hub_access() as online:
        try:
            module = open_clip.create_model(
                arch, pretrained=tag, force_quick_gelu=quick_gelu, cache_dir=cache_dir
            )
        except Exception as exc:
            raise _download_error(spec, source, online, cache_dir, exc) from None
    return _Built(module, model_cfg, f"pretrained:{tag}", arch, arch)


def _load_hf_hub(spec: ModelSpec, cache_dir: str | None) -> _Built:
    name = f"hf-hub:{spec.repo}"
    with hub_access() as online:
        try:
            module = open_clip.create_model(name, cache_dir=cache_dir)
            weights = open_clip.pretrained.download_pretrained_from_hf(
                spec.repo, cache_dir=cache_dir
            )
            model_cfg = open_clip.get_model_config(name)
        except Exception as exc:
            raise _download_error(spec, f"hf-hub {spec.repo}", online, cache_dir, exc) from None
    weights_id = "sha256:" + checkpoint.sha256_file(Path(weights))
    return _Built(module, model_cfg, weights_id, None, name)


def _load_checkpoint_dir(spec: ModelSpec, cache_dir: str | None) -> _Built:
    directory = spec.path or Path()
    config = checkpoint.read_config(directory)
    weights = checkpoint.find_weights(directory)
    arch = config.get("clipsearch", {}).get("arch")
    try:
        module = open_clip.create_model(
            f"local-dir:{directory}",
            load_weights=False,
            pretrained_text=False,
            **_local_hf_text_cfg(config["model_cfg"], directory),
        )
    except Exception as exc:
        raise ClipsearchError(f"cannot build model from {directory}: {_one_line(exc)}") from None
    _load_weights_into(module, weights, spec)
    weights_id = "sha256:" + checkpoint.sha256_file(weights)
    return _Built(module, config["model_cfg"], weights_id, arch, f"local-dir:{directory}")


def _local_hf_text_cfg(model_cfg: dict[str, Any], directory: Path) -> dict[str, Any]:
    """A Hugging Face text tower is built from the config.json saved in the checkpoint
    directory (its weights are in the checkpoint's weights file), so the checkpoint loads
    without the model directory it was trained from. The tokenizer files sit there too."""
    text_cfg = model_cfg.get("text_cfg", {})
    if "hf_model_name" not in text_cfg or not (directory / "config.json").is_file():
        return {}
    local = str(directory)
    return {
        "text_cfg": {
            **text_cfg,
            "hf_model_name": local,
            "hf_tokenizer_name": local,
            "hf_model_pretrained": False,
        }
    }


def _create_with_weights(spec: ModelSpec, weights: Path, arch: str) -> torch.nn.Module:
    try:
        module = open_clip.create_model(arch, pretrained_text=False)
    except Exception as exc:
        raise ClipsearchError(f"cannot build model '{spec}': {_one_line(exc)}") from None
    _load_weights_into(module, weights, spec)
    return module


def _load_weights_into(module: torch.nn.Module, weights: Path, spec: ModelSpec) -> None:
    state_dict = checkpoint.load_state_dict(weights)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:2]
        raise ClipsearchError(
            f"cannot load model '{spec}': weights {weights.name} do not fit the architecture "
            f"({' '.join(s.strip() for s in first)})"
        ) from None


def _download_error(
    spec: ModelSpec, source: str, online: bool, cache_dir: str | None, exc: Exception
) -> ClipsearchError:
    cache = cache_dir or "the Hugging Face cache"
    if not online:
        return ClipsearchError(
            f"cannot load model '{spec}': tried {source} in {cache}, not there, and "
            f"{endpoint_host()} cannot be reached (offline). Fix: {_OFFLINE_FIX}"
        )
    return ClipsearchError(
        f"cannot load model '{spec}': tried {source}: {_one_line(exc)[:300]}. Fix: {_OFFLINE_FIX}"
    )


_LOADERS: dict[str, Callable[[ModelSpec, str | None], _Built]] = {
    "random": _load_random,
    "pretrained": _load_pretrained,
    "hf-hub": _load_hf_hub,
    "checkpoint": _load_checkpoint_dir,
}
