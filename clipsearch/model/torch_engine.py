"""The torch engine: open_clip builds the towers from any model spec.

Training, GPU inference and ONNX export run on it. Importing this module imports torch and
open_clip (~8 s on a small CPU box), so only code that needs them does.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from clipsearch.errors import ClipsearchError
from clipsearch.model import architectures, checkpoint
from clipsearch.model.hub import OFFLINE_FIX, hub_access, offline_error
from clipsearch.model.logs import quiet_root_logger
from clipsearch.model.spec import ModelSpec

RANDOM_SEED = 0
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

if TYPE_CHECKING:

    class ClipModule(torch.nn.Module):
        """What clipsearch uses of open_clip's CLIP and CustomTextCLIP modules (open_clip
        ships no type information)."""

        logit_scale: torch.nn.Parameter
        visual: torch.nn.Module

        def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

        def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

        def lock_image_tower(
            self, unlocked_groups: int = 0, freeze_bn_stats: bool = False
        ) -> None: ...

        def lock_text_tower(
            self, unlocked_layers: int = 0, freeze_layer_norm: bool = True
        ) -> None: ...

        def set_grad_checkpointing(self, enable: bool = True) -> None: ...


@dataclass
class _Built:
    """What a loader returns: the network and the facts needed to describe and save it."""

    module: ClipModule
    model_cfg: dict[str, Any]
    weights_id: str
    arch: str | None
    tokenizer_name: str


class TorchPreprocess:
    """open_clip's eval transform as a picklable callable PIL image → float32 (3, H, W) array."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.transform(image).numpy()


class TorchTowers:
    """An open_clip module with its tokenizer and transform, on one device and dtype."""

    engine = "torch"

    def __init__(self, built: _Built, device: torch.device, precision: str) -> None:
        self.module = built.module.eval()
        self.model_cfg = built.model_cfg
        self.arch = built.arch
        self.weights_id = built.weights_id
        self.device = device
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.preprocess_cfg: dict[str, Any] = dict(open_clip.get_model_preprocess_cfg(self.module))
        self.transform = image_transform_v2(PreprocessCfg(**self.preprocess_cfg), is_train=False)
        self.tokenizer = open_clip.get_tokenizer(built.tokenizer_name)

    @property
    def logit_scale(self) -> float:
        return float(self.module.logit_scale.detach().float().exp().item())

    def preprocess(self) -> TorchPreprocess:
        return TorchPreprocess(self.transform)

    def encode_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.as_tensor(pixels).to(self.device, self.dtype)
            return self.module.encode_image(batch).float().cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            return self.module.encode_text(tokens).float().cpu().numpy()

    def save(self, directory: Path, source: str) -> Path:
        return checkpoint.save_checkpoint(
            directory,
            self.module.state_dict(),
            self.model_cfg,
            self.preprocess_cfg,
            {"arch": self.arch, "source": source},
        )


def load_towers(spec: ModelSpec, device: str, precision: str, cache_dir: str | None) -> TorchTowers:
    torch_device = resolve_device(device)
    precision = resolve_precision(precision, torch_device)
    architectures.register()
    with quiet_root_logger():
        built = _LOADERS[spec.kind](spec, cache_dir)
    built.module.to(device=torch_device, dtype=_DTYPES[precision])
    return TorchTowers(built, torch_device, precision)


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
    if precision not in _DTYPES:
        raise ClipsearchError(
            f"precision {precision!r} is not available in the torch engine: use auto, fp32, "
            "fp16 or bf16 (int8 runs in the onnx engine)"
        )
    return precision


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


def _create_with_weights(spec: ModelSpec, weights: Path, arch: str) -> ClipModule:
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
    if not online:
        return offline_error(spec, source, cache_dir)
    return ClipsearchError(
        f"cannot load model '{spec}': tried {source}: {_one_line(exc)[:300]}. Fix: {OFFLINE_FIX}",
        parameter="model",
    )


_LOADERS: dict[str, Callable[[ModelSpec, str | None], _Built]] = {
    "random": _load_random,
    "pretrained": _load_pretrained,
    "hf-hub": _load_hf_hub,
    "checkpoint": _load_checkpoint_dir,
}
