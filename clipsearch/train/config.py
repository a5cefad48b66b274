"""The training recipe: one TOML file maps onto one typed ``TrainConfig``.

Paths written in a recipe file are relative to that file (so a recipe works from any working
directory); paths given with ``--set`` or ``--out`` are relative to the working directory.
Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.errors import ClipsearchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Field metadata: resolve this string against the recipe's directory.
PATH = {"path": True}


@dataclass
class SourceConfig:
    """Where a dataset lives and how to read it (see clipsearch.train.sources)."""

    path: str = field(default="", metadata=PATH)  # file, glob, class folder or tar shards
    format: str = "auto"  # auto, parquet, csv, tsv, jsonl, folder, wds
    image_column: str = ""  # image bytes or paths; "" picks image/filepath/path/file
    caption_column: str = ""  # "" picks caption/title/text when present
    label_column: str = ""  # class names (or indices with `classes`) -> template captions
    classes: list[str] = field(default_factory=list)  # names of integer labels, in order
    captions: str = field(default="", metadata=PATH)  # separate captions table ...
    key_column: str = "image_id"  # ... joined to the images on this column
    split_column: str = "split"
    split: str = ""  # keep only rows whose split_column equals this
    limit: int = 0  # use the first N images only (0: all)


@dataclass
class DataConfig(SourceConfig):
    """The training set, its captions and its augmentation."""

    templates: str | list[str] = "photo"  # class label -> caption: a set name or "{}" strings
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # random resized crop
    translate: int = 0  # >0: no resized crop; shift up to N px (reflect-padded random crop)
    flip: bool = True  # random horizontal flip
    alternate_flip: bool = False  # with flip: each image mirrored every other epoch instead
    workers: int = 2  # DataLoader decoding processes (0: in the training process)


@dataclass
class ModelConfig:
    arch: str = "clipsearch-tiny"  # open_clip architecture, from scratch
    init: str = ""  # or a model spec to start from (checkpoint dir, ARCH:TAG, ...)
    image_size: int = 0  # 0: the architecture's
    image_init: str = field(default="", metadata=PATH)  # torchvision ResNet state dict (.pth)
    text_hf: str = ""  # Hugging Face text tower: local dir, hub id, or package:NAME
    text_proj: str = "linear"  # projection of the HF tower to the embedding (linear, mlp)
    context_length: int = 0  # 0: the architecture's (HF towers: 32)
    lock_image: bool = False  # LiT: freeze the image tower
    lock_text: bool = False  # LiT: freeze the text tower (an HF tower keeps its projection)
    grad_checkpointing: bool = False


@dataclass
class LossConfig:
    kind: str = "clip"  # clip (softmax cross-entropy) or siglip (sigmoid)
    multi_positive: str = "auto"  # same caption/class = positives: auto (on for class data)
    init_temperature: float = 0.07  # logit_scale starts at log(1/T)
    max_logit_scale: float = 100.0  # logit_scale is clamped to <= log(this)
    label_smoothing: float = 0.0  # clip loss: this share of each target spread over the batch


@dataclass
class OptimConfig:
    epochs: float = 1.0
    steps: int = 0  # total optimizer steps; 0: from epochs
    batch_size: int = 256  # global contrastive batch (all ranks, all micro-batches)
    accum: int = 1  # micro-batches per step: same loss, batch_size/accum in memory
    optimizer: str = "adamw"  # adamw, or sgd (Nesterov momentum, coupled weight decay)
    lr: float = 1e-3
    weight_decay: float = 0.1  # not on biases, norms, embeddings, logit_scale
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # adamw
    eps: float = 1e-6  # adamw
    momentum: float = 0.9  # sgd
    bn_bias_lr_scale: float = 1.0  # BatchNorm biases learn this many times faster (airbench: 64)
    lookahead_every: int = 0  # >0: weight averaging every N steps (see train/lookahead.py)
    lookahead_start: float = 3.0  # ... from this epoch on
    warmup: int = 100  # linear warmup steps, then cosine to zero
    grad_clip: float = 1.0  # max grad norm (0: off)
    precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16
    seed: int = 0
    device: str = "auto"


@dataclass
class EvalConfig:
    data: SourceConfig = field(default_factory=SourceConfig)
    every: int = 0  # evaluate every N steps (0: only at the end)
    templates: str | list[str] = "default"  # zero-shot prompts: default (80), simple, photo
    batch_size: int = 256
    grid: int = 16  # sample predictions drawn in predictions.png


@dataclass
class OutputConfig:
    dir: str = field(default="", metadata=PATH)  # "": runs/RECIPE-NAME in the working dir
    save_every: int = 500  # checkpoint every N steps (and at the end)
    log_every: int = 10  # metrics line every N steps
    plots: bool = True


@dataclass
class TrainConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def load_config(
    recipe: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
) -> TrainConfig:
    """Read a recipe (or start from defaults), apply ``key.sub=value`` overrides and ``out``."""
    config = TrainConfig()
    if recipe is not None:
        path = Path(recipe)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClipsearchError(f"no recipe at {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ClipsearchError(f"cannot read recipe {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ClipsearchError(f"recipe {path} is not valid TOML: {exc}") from None
        config.name = path.stem
        _apply_table(config, table, "", path.resolve().parent)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ClipsearchError(f"--set {item!r}: expected key.sub=value, e.g. optim.lr=3e-4")
        set_value(config, key.strip(), value.strip(), Path.cwd())
    if out is not None:
        config.output.dir = os.path.normpath(Path.cwd() / Path(out).expanduser())
    if not config.output.dir:
        config.output.dir = str(Path.cwd() / "runs" / config.name)
    return config


def set_value(config: Any, dotted: str, text: str, base: Path) -> None:
    """Set one dotted key from command-line text, checked and coerced to the field's type.

    The text is read as a TOML value (3, 1e-3, true, [0.5, 1.0]); a string field takes the
    text as written (so name=1e3 stays "1e3").
    """
    *parents, last = dotted.split(".")
    target, prefix = config, ""
    for part in parents:
        fld = _field(target, part, prefix)
        target = getattr(target, fld.name)
        prefix += part + "."
        if not dataclasses.is_dataclass(target):
            raise ClipsearchError(f"recipe key {prefix.rstrip('.')} is a value, not a table")
    fld = _field(target, last, prefix)
    value = _parse_value(text)
    if typing.get_type_hints(type(target))[fld.name] is str and not isinstance(value, str):
        value = text
    _apply_table(target, {last: value}, prefix, base)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(table: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved with ``to_dict`` (paths are absolute by then)."""
    config = TrainConfig()
    _apply_table(config, table, "", Path("/"))
    return config


def _apply_table(target: Any, table: dict[str, Any], prefix: str, base: Path) -> None:
    hints = typing.get_type_hints(type(target))
    for key, value in table.items():
        fld = _field(target, key, prefix)
        name = prefix + key
        current = getattr(target, fld.name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ClipsearchError(f"recipe key {name} must be a table ([{name}])")
            _apply_table(current, value, name + ".", base)
            continue
        value = _coerce(value, hints[fld.name], name)
        if fld.metadata.get("path") and value:
            value = os.path.normpath(base / Path(value).expanduser())
        setattr(target, fld.name, value)


def _field(target: Any, key: str, prefix: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key in fields:
        return fields[key]
    close = difflib.get_close_matches(key, list(fields), n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known: {', '.join(fields)}"
    raise ClipsearchError(f"unknown recipe key '{prefix}{key}'{hint}")


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` as type ``hint``, or a ClipsearchError naming the key."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, name)
            except ClipsearchError:
                continue
        raise ClipsearchError(f"recipe key {name}: {value!r} is not a {_type_name(hint)}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ClipsearchError(f"recipe key {name}: expected a list, got {value!r}")
        return [_coerce(v, item, name) for v in value]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    accepted = {
        bool: isinstance(value, bool),
        int: number and isinstance(value, int),
        float: number,
        # --set name=123 parses as an int; a string field takes it as written.
        str: number or isinstance(value, str),
    }
    if accepted.get(hint, False):
        return hint(value)
    raise ClipsearchError(f"recipe key {name}: expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )
