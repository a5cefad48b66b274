"""AdamW (or Nesterov SGD) with the usual CLIP exclusions from weight decay, and a cosine
learning-rate schedule with warmup."""

from __future__ import annotations

import math

import torch

from clipsearch.errors import ClipsearchError
from clipsearch.train.config import OptimConfig


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases, norm weights (all 1-D), embeddings and the temperature get no weight decay."""
    return param.ndim < 2 or "embedding" in name or "logit_scale" in name or "logit_bias" in name


def batchnorm_biases(module: torch.nn.Module) -> set[int]:
    """ids of the BatchNorm biases (ConvNet towers; transformers' LayerNorms are not these)."""
    norms = (m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    return {id(m.bias) for m in norms if m.bias is not None}


def make_optimizer(module: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Parameter groups carry an ``lr_scale``: the step's learning rate times it is theirs."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    bn_biases = batchnorm_biases(module) if cfg.bn_bias_lr_scale != 1 else set()
    groups = [
        {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": cfg.weight_decay},
        {
            "params": [p for n, p in named if no_decay(n, p) and id(p) not in bn_biases],
            "weight_decay": 0.0,
        },
        {
            "params": [p for n, p in named if id(p) in bn_biases],
            "weight_decay": 0.0,
            "lr_scale": cfg.bn_bias_lr_scale,
        },
    ]
    groups = [{"lr_scale": 1.0, **g} for g in groups if g["params"]]
    try:
        if cfg.optimizer == "sgd":
            # Weight decay here is the L2 term of classic ConvNet training (coupled), as in
            # the fast CIFAR-10 baselines this option is for.
            return torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, foreach=True
            )
        return torch.optim.AdamW(  # "adamw": the names were checked when the recipe was read
            groups,
            lr=cfg.lr,
            betas=(cfg.betas[0], cfg.betas[1]),  # two numbers: check_combinations
            eps=cfg.eps,
            foreach=True,  # torch picks it only on GPUs; on CPUs too it is ~3x faster
        )
    except ValueError as exc:  # torch's own checks: "Invalid learning rate: -1.0", ...
        raise ClipsearchError(f"[optim] settings: {exc}") from None


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warmup over ``cfg.warmup`` steps, then cosine decay to zero at ``total``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(progress, 1.0)))
