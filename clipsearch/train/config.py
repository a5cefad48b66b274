"""The training recipe: one TOML file maps onto one typed ``TrainConfig``.

Paths written in a recipe file are relative to that file (so a recipe works from any working
directory); paths given as overrides or as the output directory are relative to the working
directory.
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
DATA_FORMATS = ("parquet", "csv", "tsv", "jsonl", "folder", "wds")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SWITCH = ("auto", "true", "false", "on", "off", "yes", "no")


def switch_on(value: str, auto: bool) -> bool:
    """A ``SWITCH`` setting as a bool; ``auto`` is what "auto" means here."""
    return auto if value == "auto" else value in ("true", "on", "yes")


def one_of(choices: tuple[str, ...]) -> dict[str, Any]:
    """Field metadata: the value must be one of ``choices``."""
    return {"choices": choices}


def at_least(low: float, below: float | None = None) -> dict[str, Any]:
    """Field metadata: the number (or each of a list) must be ``low`` or more (and under
    ``below``)."""
    return {"min": low, "below": below}


def above(low: float, below: float | None = None) -> dict[str, Any]:
    """Field metadata: the number (or each of a list) must be over ``low`` (and under ``below``)."""
    return {"above": low, "below": below}


@dataclass
class SourceConfig:
    """Where a dataset lives and how to read it (see clipsearch.train.sources)."""

    path: str = field(default="", metadata=PATH)  # file, glob, class folder or tar shards
    format: str = field(default="auto", metadata=one_of(("auto", *DATA_FORMATS)))
    image_column: str = ""  # image bytes or paths; "" picks image/filepath/path/file
    caption_column: str = ""  # "" picks caption/title/text when present
    label_column: str = ""  # class names (or indices with `classes`) -> template captions
    classes: list[str] = field(default_factory=list)  # names of integer labels, in order
    captions: str = field(default="", metadata=PATH)  # separate captions table ...
    key_column: str = "image_id"  # ... joined to the images on this column
    split_column: str = "split"
    split: str = ""  # keep only rows whose split_column equals this
    limit: int = field(default=0, metadata=at_least(0))  # the first N images only (0: all)


@dataclass
class DataConfig(SourceConfig):
    """The training set, its captions and its augmentation."""

    templates: str | list[str] = "photo"  # class label -> caption: a set name or "{}" strings
    # random resized crop: the share of the image kept, from-to
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0], metadata=above(0))
    # >0: no resized crop; shift up to N px (reflect-padded random crop)
    translate: int = field(default=0, metadata=at_least(0))
    flip: bool = True  # random horizontal flip
    alternate_flip: bool = False  # with flip: each image mirrored every other epoch instead
    # DataLoader decoding processes (0: in the training process)
    workers: int = field(default=2, metadata=at_least(0))


@dataclass
class ModelConfig:
    arch: str = "clipsearch-tiny"  # open_clip architecture, from scratch
    init: str = ""  # or a model spec to start from (checkpoint dir, ARCH:TAG, ...)
    image_size: int = field(default=0, metadata=at_least(0))  # 0: the architecture's
    image_init: str = field(default="", metadata=PATH)  # torchvision ResNet state dict (.pth)
    text_hf: str = ""  # Hugging Face text tower: local dir, hub id, or package:NAME
    text_proj: str = "linear"  # projection of the HF tower to the embedding (linear, mlp)
    context_length: int = field(default=0, metadata=at_least(0))  # 0: the arch's (HF: 32)
    lock_image: bool = False  # LiT: freeze the image tower
    lock_text: bool = False  # LiT: freeze the text tower (an HF tower keeps its projection)
    grad_checkpointing: bool = False


@dataclass
class LossConfig:
    # clip (softmax cross-entropy) or siglip (sigmoid)
    kind: str = field(default="clip", metadata=one_of(("clip", "siglip")))
    # same caption/class = positives: auto (on for class data), true or false
    multi_positive: str = field(default="auto", metadata=one_of(SWITCH))
    init_temperature: float = field(default=0.07, metadata=above(0))  # logit_scale: log(1/T)
    max_logit_scale: float = field(default=100.0, metadata=above(1))  # clamped to <= log(this)
    # clip loss: this share of each target spread over the batch
    label_smoothing: float = field(default=0.0, metadata=at_least(0, below=1))


@dataclass
class OptimConfig:
    epochs: float = field(default=1.0, metadata=at_least(0))
    steps: int = field(default=0, metadata=at_least(0))  # total optimizer steps; 0: from epochs
    # global contrastive batch (all ranks, all micro-batches)
    batch_size: int = field(default=256, metadata=at_least(2))
    # micro-batches per step: same loss, batch_size/accum in memory
    accum: int = field(default=1, metadata=at_least(1))
    # adamw, or sgd (Nesterov momentum, coupled weight decay)
    optimizer: str = field(default="adamw", metadata=one_of(("adamw", "sgd")))
    lr: float = field(default=1e-3, metadata=above(0))
    # not on biases, norms, embeddings, logit_scale
    weight_decay: float = field(default=0.1, metadata=at_least(0))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98], metadata=at_least(0, below=1))
    eps: float = field(default=1e-6, metadata=above(0))  # adamw
    momentum: float = field(default=0.9, metadata=at_least(0, below=1))  # sgd
    # BatchNorm biases learn this many times faster (airbench: 64)
    bn_bias_lr_scale: float = field(default=1.0, metadata=above(0))
    # >0: weight averaging every N steps (see train/lookahead.py) ...
    lookahead_every: int = field(default=0, metadata=at_least(0))
    lookahead_start: float = field(default=3.0, metadata=at_least(0))  # ... from this epoch on
    # linear warmup steps, then cosine to zero
    warmup: int = field(default=100, metadata=at_least(0))
    grad_clip: float = field(default=1.0, metadata=at_least(0))  # max grad norm (0: off)
    # auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16
    precision: str = field(default="auto", metadata=one_of(PRECISIONS))
    seed: int = 0
    device: str = "auto"


@dataclass
class EvalConfig:
    data: SourceConfig = field(default_factory=SourceConfig)
    every: int = field(default=0, metadata=at_least(0))  # every N steps (0: at the end)
    templates: str | list[str] = "default"  # zero-shot prompts: default (80), simple, photo
    batch_size: int = field(default=256, metadata=at_least(1))
    grid: int = field(default=16, metadata=at_least(0))  # predictions drawn in predictions.png


@dataclass
class OutputConfig:
    dir: str = field(default="", metadata=PATH)  # "": runs/RECIPE-NAME in the working dir
    # checkpoint every N steps (and at the end)
    save_every: int = field(default=500, metadata=at_least(1))
    log_every: int = field(default=10, metadata=at_least(1))  # metrics line every N steps
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
            raise ClipsearchError(
                f"{item!r}: expected key.sub=value, e.g. optim.lr=3e-4", parameter="overrides"
            )
        set_value(config, key.strip(), value.strip(), Path.cwd())
    if out is not None:
        config.output.dir = os.path.normpath(Path.cwd() / Path(out).expanduser())
    if not config.output.dir:
        config.output.dir = str(Path.cwd() / "runs" / config.name)
    check_combinations(config)
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
    check_combinations(config)
    return config


def check_combinations(config: TrainConfig) -> None:
    """Settings that are valid alone but not together (each value was checked when set)."""
    pairs = {"data.crop_scale": config.data.crop_scale, "optim.betas": config.optim.betas}
    for name, values in pairs.items():
        if len(values) != 2:
            raise ClipsearchError(f"recipe key {name}: expected two numbers, got {values!r}")
    low, high = config.data.crop_scale
    if not low <= high <= 1:
        raise ClipsearchError(
            f"recipe key data.crop_scale: expected [low, high] with low <= high <= 1, "
            f"got {config.data.crop_scale!r}"
        )
    if config.loss.label_smoothing and config.loss.kind != "clip":
        raise ClipsearchError("loss.label_smoothing applies to loss.kind = clip only")
    if config.optim.steps == 0 and config.optim.epochs <= 0:
        raise ClipsearchError("optim.epochs must be above 0 when optim.steps is 0")
    if config.optim.batch_size % config.optim.accum:
        raise ClipsearchError(
            f"optim.batch_size {config.optim.batch_size} does not split into "
            f"optim.accum = {config.optim.accum} equal micro-batches"
        )


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
        _check_value(value, fld.metadata, name)
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
        # An override name=123 parses as an int; a string field takes it as written.
        str: number or isinstance(value, str),
    }
    if accepted.get(hint, False):
        return hint(value)
    raise ClipsearchError(f"recipe key {name}: expected {_type_name(hint)}, got {value!r}")


def _check_value(value: Any, rules: Any, name: str) -> None:
    """The field's ``one_of``/``at_least``/``above`` rules, as a one-line error naming it."""
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ClipsearchError(
            f"recipe key {name}: {value!r} is not one of {', '.join(choices)}{hint}"
        )
    for number in value if isinstance(value, list) else [value]:
        if not isinstance(number, int | float) or isinstance(number, bool):
            continue
        low, exclusive, high = rules.get("min"), rules.get("above"), rules.get("below")
        wrong = (
            (low is not None and number < low)
            or (exclusive is not None and number <= exclusive)
            or (high is not None and number >= high)
        )
        if wrong:
            bounds = [
                *([f">= {low}"] if low is not None else []),
                *([f"> {exclusive:g}"] if exclusive is not None else []),
                *([f"< {high:g}"] if high is not None else []),
            ]
            raise ClipsearchError(f"recipe key {name}: {number!r} must be {' and '.join(bounds)}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )
