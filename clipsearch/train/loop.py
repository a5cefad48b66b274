"""``train(config)``: the training loop, top to bottom.

Run it in one process, or in several with ``torchrun -m clipsearch train``: each rank then
takes its slice of every global batch, features are gathered across ranks, and only rank 0
writes. The output directory is a checkpoint ``Model.load`` reads, plus training_state.pt,
metrics.jsonl, curves.png and predictions.png.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from clipsearch.base.process_group import Group, join
from clipsearch.errors import ClipsearchError
from clipsearch.model.torch_engine import resolve_device, resolve_precision
from clipsearch.train import report
from clipsearch.train.config import TrainConfig, from_dict, switch_on, to_dict
from clipsearch.train.data import Collate, PairDataset, StepSampler, train_loader, train_transform
from clipsearch.train.evaluate import evaluate, module_embedders
from clipsearch.train.lookahead import Lookahead
from clipsearch.train.model import Built, build_model, fit_to_data, save_model
from clipsearch.train.optim import lr_at, make_optimizer
from clipsearch.train.sources import Source, load_source
from clipsearch.train.state import STATE_NAME, load_state, rng_state, save_state, set_rng_state
from clipsearch.train.step import contrastive_step
from clipsearch.zeroshot.templates import get_templates

if TYPE_CHECKING:
    from clipsearch.model.torch_engine import ClipModule

# Keys that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = ("data.workers", "output.", "eval.every", "eval.batch_size", "optim.device")


@dataclass
class RunResult:
    directory: Path
    step: int
    metrics: dict[str, float]  # the last evaluation's
    samples_per_s: float


@dataclass
class _Run:
    """Everything one training run holds, built by ``_setup``."""

    cfg: TrainConfig
    group: Group
    out: Path
    device: torch.device
    autocast: Any
    built: Built
    module: ClipModule  # the network
    model: Any  # what the step calls: the DDP wrapper, or the network itself
    optimizer: torch.optim.Optimizer
    lookahead: Lookahead
    scaler: torch.amp.GradScaler | None
    source: Source
    eval_source: Source | None
    multi_positive: bool
    total: int
    steps_per_epoch: int
    step: int
    log: report.MetricsLog | None
    progress: report.Progress


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None) -> RunResult:
    """Train as ``cfg`` says; ``resume`` continues the run in ``cfg.output.dir`` exactly.
    ``stop_after`` ends (with a checkpoint) after that many steps, as an interruption would."""
    run = _setup(cfg, join(), resume)
    loader = _loader(run)
    last_eval: dict[str, float] = {}
    _set_train_mode(run.module, cfg)
    for batch in loader:
        lr = lr_at(run.step, run.total, cfg.optim)
        loss = _optimize(run, batch, lr)
        run.step += 1
        run.lookahead.after_step(run.module, run.step)
        done = run.step == run.total
        stop = done or run.step == stop_after
        if run.group.is_main and (_due(run.step, cfg.output.log_every) or stop):
            _log_train(run, loss, lr)
        if run.eval_source is not None and (done or _due(run.step, cfg.eval.every)):
            last_eval = _evaluate(run, final=done) or last_eval
        if stop or _due(run.step, cfg.output.save_every):
            _save(run)
        if stop:
            break
    return _finish(run, last_eval)


def _setup(cfg: TrainConfig, group: Group, resume: bool) -> _Run:
    out = Path(cfg.output.dir)
    state: dict[str, Any] | None = None
    if resume:
        state = _resume_state(out, cfg)
    else:
        _check_fresh(out)
    device = _device(cfg.optim.device, group)
    precision = resolve_precision(cfg.optim.precision, device)
    torch.manual_seed(cfg.optim.seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we fork DataLoader workers

    built = build_model(cfg.model, cfg.loss.kind, cfg.loss.init_temperature)
    # Convolutions run ~1.5x faster in channels-last (oneDNN on CPU, tensor cores on GPU);
    # it only touches 4-d weights, so transformer towers are unaffected.
    # torch accepts to(device, memory_format=...), which its type stubs lack.
    module = built.module.to(  # type: ignore[call-overload]
        device, memory_format=torch.channels_last
    )
    module.output_dict = True
    optimizer = make_optimizer(module, cfg.optim)  # before the data: a bad setting fails fast
    source = load_source(cfg.data)
    eval_source = load_source(cfg.eval.data) if cfg.eval.data.path else None
    steps_per_epoch = StepSampler(len(source), cfg.optim.batch_size, 0, 0, 0).steps_per_epoch
    total = cfg.optim.steps or max(1, math.ceil(cfg.optim.epochs * steps_per_epoch))
    if (cfg.optim.batch_size // group.world) % cfg.optim.accum:
        raise ClipsearchError(
            f"batch_size {cfg.optim.batch_size} over {group.world} rank(s) does not split "
            f"into accum = {cfg.optim.accum} equal micro-batches"
        )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    start = round(cfg.optim.lookahead_start * steps_per_epoch)
    lookahead = Lookahead(cfg.optim.lookahead_every, start, total, steps_per_epoch)
    step = 0
    if state is None and not cfg.model.init:
        note = fit_to_data(module, source, _eval_preprocess(built), cfg.data.workers)
        built.notes.extend([note] if note else [])
    if state is not None:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        lookahead.load_state_dict(state.get("lookahead", {}), device)
        step = int(state["step"])
    model: Any = module
    if group.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
    run = _Run(
        cfg=cfg,
        group=group,
        out=out,
        device=device,
        autocast=_autocast(precision, device),
        built=built,
        module=module,
        model=model,
        optimizer=optimizer,
        lookahead=lookahead,
        scaler=scaler,
        source=source,
        eval_source=eval_source,
        # auto: on for class-labelled data, where images of one class share a prompt
        multi_positive=switch_on(cfg.loss.multi_positive, auto=source.captions is None),
        total=total,
        steps_per_epoch=steps_per_epoch,
        step=step,
        log=report.MetricsLog(out, step) if group.is_main else None,
        progress=report.Progress(total, step),
    )
    if group.is_main:
        _announce(run)
    return run


def _loader(run: _Run):
    cfg, pre = run.cfg, run.built.preprocess_cfg
    alternate = cfg.data.flip and cfg.data.alternate_flip
    random_flip = cfg.data.flip and not alternate
    transform = train_transform(
        pre["size"], pre["mean"], pre["std"], cfg.data.crop_scale, random_flip, cfg.data.translate
    )
    templates = get_templates(cfg.data.templates)
    dataset = PairDataset(run.source, transform, templates, cfg.optim.seed, alternate)
    sampler = StepSampler(
        len(run.source),
        cfg.optim.batch_size,
        cfg.optim.seed,
        start_step=run.step,
        total_steps=run.total,
        rank=run.group.rank,
        world=run.group.world,
    )
    return train_loader(dataset, sampler, Collate(run.built.tokenizer), cfg.data.workers)


def _optimize(run: _Run, batch: dict[str, Any], lr: float) -> torch.Tensor:
    """One optimizer step on one global batch; returns the batch's loss."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # states saved before lr_scale lack it
    batch = {k: v.to(run.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    run.optimizer.zero_grad(set_to_none=True)
    scaler = run.scaler

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    loss = contrastive_step(
        run.model,
        run.module,
        batch,
        accum=run.cfg.optim.accum,
        kind=run.cfg.loss.kind,
        use_keys=run.multi_positive,
        world=run.group.world,
        autocast=run.autocast,
        backward=backward,
        smoothing=run.cfg.loss.label_smoothing,
    )
    if scaler is not None:
        scaler.unscale_(run.optimizer)
    if run.cfg.optim.grad_clip > 0:
        trainable = [p for p in run.module.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(trainable, run.cfg.optim.grad_clip, foreach=True)
    if scaler is not None:
        scaler.step(run.optimizer)
        scaler.update()
    else:
        run.optimizer.step()
    with torch.no_grad():
        run.module.logit_scale.clamp_(0, math.log(run.cfg.loss.max_logit_scale))
    return loss


def _log_train(run: _Run, loss: torch.Tensor, lr: float) -> None:
    scale = float(run.module.logit_scale.detach().exp())
    batch_size = run.cfg.optim.batch_size
    loss_value = float(loss)
    record = {
        "kind": "train",
        "step": run.step,
        "epoch": round(run.step / run.steps_per_epoch, 4),
        "loss": loss_value,
        "lr": lr,
        "logit_scale": scale,
        "temperature": 1 / scale,
        "samples_per_s": run.progress.rate(run.step, batch_size),
        "elapsed_s": run.progress.elapsed(),
    }
    assert run.log is not None  # rank 0's
    run.log.write(record)
    run.progress.update(run.step, batch_size, loss_value, lr, 1 / scale)


def _finish(run: _Run, last_eval: dict[str, float]) -> RunResult:
    rate = run.progress.rate(run.step, run.cfg.optim.batch_size)
    if run.group.is_main:
        if run.cfg.output.plots:
            assert run.log is not None  # rank 0's
            records = report.read_metrics(run.log.path)
            report.plot_curves(records, run.out / report.CURVES_NAME)
        run.progress.message(
            f"done: step {run.step}/{run.total}, {rate:,.1f} samples/s, checkpoint {run.out}"
        )
    run.group.barrier()
    return RunResult(run.out, run.step, last_eval, rate)


def _check_fresh(out: Path) -> None:
    if (out / STATE_NAME).exists():
        raise ClipsearchError(
            f"{out} already holds a run: resume it, or choose another output directory",
            parameter="out",
        )


def _resume_state(out: Path, cfg: TrainConfig) -> dict[str, Any]:
    state = load_state(out)
    saved, now = _flat(to_dict(from_dict(state["config"]))), _flat(to_dict(cfg))
    changed = [k for k in now if saved.get(k) != now[k] and not k.startswith(_RESUMABLE_CHANGES)]
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed[:3])
        raise ClipsearchError(f"cannot resume {out} with a different recipe ({shown})")
    return state


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in table.items():
        flat.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return flat


def _device(name: str, group: Group) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and group.world > 1:
        device = torch.device("cuda", group.local_rank)  # one GPU per torchrun rank
    return device


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def _set_train_mode(module: ClipModule, cfg: TrainConfig) -> None:
    """Train mode, except locked towers: no dropout, frozen BatchNorm statistics."""
    module.train()
    if cfg.model.lock_image:
        module.visual.eval()
    if cfg.model.lock_text:
        text_tower = getattr(module, "text", None) or module.transformer
        assert isinstance(text_tower, torch.nn.Module)
        text_tower.eval()


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _announce(run: _Run) -> None:
    cfg, source = run.cfg, run.source
    kind = "class-labelled" if source.captions is None else "captioned"
    run.progress.message(
        f"training {cfg.name}: {len(source):,} {kind} images, {run.total:,} steps "
        f"({run.total / run.steps_per_epoch:.2f} epochs) of {cfg.optim.batch_size} on "
        f"{run.group.world} process(es), multi-positive targets "
        f"{'on' if run.multi_positive else 'off'}"
    )
    for note in run.built.notes:
        run.progress.message(f"note: {note}")


def _evaluate(run: _Run, final: bool) -> dict[str, float] | None:
    """Evaluate on rank 0 (the others wait); at the end also draw the predictions grid."""
    if not run.group.is_main:
        run.group.barrier()
        return None
    started = time.perf_counter()
    cfg, source = run.cfg, run.eval_source
    assert source is not None and run.log is not None  # evaluating on rank 0
    run.module.eval()
    embedders = module_embedders(run.module, run.built.tokenizer, run.device, run.autocast)
    result = evaluate(
        source,
        _eval_preprocess(run.built),
        *embedders,
        templates=get_templates(cfg.eval.templates),
        batch_size=cfg.eval.batch_size,
        workers=cfg.data.workers,
        examples=cfg.eval.grid,
    )
    _set_train_mode(run.module, cfg)
    run.log.write({"kind": "eval", "step": run.step, **result.metrics})
    shown = {k: round(v, 2) for k, v in result.metrics.items() if k != "eval_images"}
    run.progress.message(f"eval at step {run.step}: {shown}")
    if final and cfg.output.plots and result.examples:
        images = [source.image(i) for i, _, _ in result.examples]
        report.plot_predictions(images, result.examples, run.out / report.PREDICTIONS_NAME)
    run.progress.pause(time.perf_counter() - started)
    run.group.barrier()
    return result.metrics


def _eval_preprocess(built: Built):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**built.preprocess_cfg), is_train=False)


def _save(run: _Run) -> None:
    """Rank 0 writes training_state.pt, then the checkpoint itself (each file atomically)."""
    if run.group.is_main:
        started = time.perf_counter()
        state = {
            "step": run.step,
            "model": run.module.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else {},
            "lookahead": run.lookahead.state_dict(),
            "rng": rng_state(),
            "config": to_dict(run.cfg),
        }
        save_state(run.out, state)
        save_model(run.out, run.built, run.module)
        run.progress.pause(time.perf_counter() - started)
    run.group.barrier()
