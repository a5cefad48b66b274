"""Small real training data and recipes that several training test modules share: solid
class colours with noise (three classes), a cifar10-like Parquet table, a tiny recipe, and
readers of a run's losses and weights."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from safetensors.torch import load_file

from clipsearch.model.checkpoint import WEIGHTS_NAME
from clipsearch.train.report import read_metrics

CLASSES = ["red", "green", "blue"]


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def color_image(name: str, i: int, size: int = 20) -> Image.Image:
    """A solid class colour with a little per-image noise, so images differ."""
    rng = np.random.default_rng(i)
    base = np.array(COLORS[name], np.int16)
    pixels = base + rng.integers(-20, 21, (size, size, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def write_class_parquet(path: Path, n: int) -> Path:
    """cifar10's layout: PNG bytes, integer label, label_name."""
    names = [CLASSES[i % 3] for i in range(n)]
    table = pa.table(
        {
            "image": [png_bytes(color_image(c, i)) for i, c in enumerate(names)],
            "label": pa.array([i % 3 for i in range(n)], pa.int8()),
            "label_name": names,
        }
    )
    pq.write_table(table, path)
    return path


RECIPE = """
name = "tiny-test"
[data]
path = "train.parquet"
label_column = "label_name"
templates = ["a photo of a {{}}.", "a {{}} square."]
workers = {workers}
[model]
arch = "clipsearch-tiny"
image_size = 16
[optim]
steps = {steps}
batch_size = 8
accum = {accum}
lr = 1e-3
warmup = 2
seed = 3
[eval]
data.path = "test.parquet"
data.label_column = "label_name"
templates = "simple"
every = {eval_every}
[output]
log_every = 1
save_every = 100
plots = {plots}
"""


def write_recipe(tmp_path: Path, steps=6, accum=1, workers=0, eval_every=0, plots="false") -> Path:
    write_class_parquet(tmp_path / "train.parquet", 24)
    write_class_parquet(tmp_path / "test.parquet", 9)
    recipe = tmp_path / "recipe.toml"
    text = RECIPE.format(
        steps=steps, accum=accum, workers=workers, eval_every=eval_every, plots=plots
    )
    recipe.write_text(text)
    return recipe


def losses(directory: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(directory / "metrics.jsonl") if r["kind"] == "train"]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / WEIGHTS_NAME))


def ddp_step_grads(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Gradients of one accumulated step on this rank's share of a fixed global batch of 8."""
    from contextlib import nullcontext

    from clipsearch.train.config import ModelConfig
    from clipsearch.train.model import build_model
    from clipsearch.train.step import contrastive_step

    torch.manual_seed(0)
    built = build_model(ModelConfig(arch="clipsearch-tiny", image_size=16))
    module = built.module
    module.output_dict = True
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    words = ["cat", "dog", "cat", "ship", "frog", "dog", "car", "cat"]
    texts = built.tokenizer([f"a photo of a {w}." for w in words])
    keys = torch.tensor([sorted(set(words)).index(w) for w in words])
    mine = slice(rank * 8 // world, (rank + 1) * 8 // world)
    model = torch.nn.parallel.DistributedDataParallel(module) if world > 1 else module
    batch = {"images": images[mine], "texts": texts[mine], "keys": keys[mine]}
    contrastive_step(
        model,
        module,
        batch,
        accum=2,
        kind="clip",
        use_keys=True,
        world=world,
        autocast=nullcontext,
        backward=lambda loss: loss.backward(),
    )
    return {n: p.grad for n, p in module.named_parameters()}
