"""The supervised ceiling beside `train/cifar10.toml`: the fastest published CIFAR-10 recipe,
run on this machine and on ../shared/data's copy of CIFAR-10.

    python benchmarks/cifar10_ceiling.py [--recipe airbench94|airbench95] [--epochs E]
                                         [--precision bf16|fp32] [--seed 0] [--rejpeg QUALITY]

The recipe is Keller Jordan's airbench94 (github.com/KellerJordan/cifar10-airbench): 94.01%
test accuracy, averaged over 1,000 runs, after 9.9 epochs on an A100 in fp16, on the original
CIFAR-10 pixels. Re-implemented here with its published hyperparameters: the same network as
clipsearch-convnet-whitened's trunk (2x2 whitening stem fitted to 5,000 training images,
identity-initialised 3x3 convolutions, widths 64/256/256, BatchNorm without scale), a 10-way
linear head scaled by 1/9, summed label-smoothed cross-entropy, Nesterov SGD with a
triangular schedule, BatchNorm biases at 64x the learning rate, lookahead averaging from
epoch 3, alternating flips and 2-px translations, and 6 test-time views at the end.
`--recipe airbench95` is its wider sibling (widths 128/384/384, learning rate 10 instead of
11.5, 15 epochs; 95.01% over 200 runs, ~3.9x airbench94's compute by its authors' count).

It answers two questions for the contrastive trainer: how far a classifier trained the
fastest known way gets per epoch on *this* data (whose pixels went through JPEG once, see
../shared/data/cifar10/README.md), and what CPU bf16 autocast costs against fp32. Prints the
test accuracy after every epoch, samples/s, and the final accuracy with 6 views.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import math
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"
MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)
BATCH, MOMENTUM, WEIGHT_DECAY, BIAS_LR_SCALE = 1024, 0.85, 0.0153, 64.0
SMOOTHING, WHITEN_BIAS_EPOCHS, LOOKAHEAD_START, LOOKAHEAD_EVERY = 0.2, 3, 3, 5
# What differs between the published recipes: stage widths, learning rate, epochs.
RECIPES = {
    "airbench94": ((64, 256, 256), 11.5, 9.9),
    "airbench95": ((128, 384, 384), 10.0, 15.0),
}


def decode(data: bytes, rejpeg: int) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if rejpeg:  # one more JPEG pass, as the copy's pixels already had (Pillow's defaults: 4:2:0)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rejpeg)
        image = Image.open(buffer).convert("RGB")
    return np.asarray(image)


def load(pattern: str, rejpeg: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images normalized, (N, 3, 32, 32) channels-last float32, and int64 labels."""
    table = pq.read_table(sorted(glob.glob(str(DATA / pattern))), columns=["image", "label"])
    pixels = np.stack([decode(b, rejpeg) for b in table["image"].to_pylist()])
    images = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    labels = torch.from_numpy(table["label"].to_numpy().astype(np.int64))
    return images.contiguous(memory_format=torch.channels_last), labels


class Conv(nn.Conv2d):
    """Bias-free 'same' convolution whose first in_channels filters start as the identity."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 3, padding="same", bias=False)
        nn.init.dirac_(self.weight.data[:c_in])


def batch_norm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)  # scale fixed at 1, only the bias learns
    return norm


def stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        Conv(c_in, c_out), nn.MaxPool2d(2), batch_norm(c_out), nn.GELU(),
        Conv(c_out, c_out), batch_norm(c_out), nn.GELU(),
    )  # fmt: skip


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 9


def make_net(whitening_images: torch.Tensor, widths: tuple[int, int, int]) -> nn.Sequential:
    stem = nn.Conv2d(3, 24, 2, padding=0, bias=True)
    w1, w2, w3 = widths
    net = nn.Sequential(
        stem, nn.GELU(), stage(24, w1), stage(w1, w2), stage(w2, w3),
        nn.MaxPool2d(3), nn.Flatten(), nn.Linear(w3, 10, bias=False), Scale(),
    )  # fmt: skip
    with torch.no_grad():
        stem.bias.zero_()
        patches = whitening_images.unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, H', W', 2, 2
        patches = patches.permute(0, 3, 2, 1, 4, 5).reshape(-1, 12)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        # Strongest direction first: the order decides which channels the identity-initialised
        # convolution after the stem passes through.
        eigenvalues, directions = eigenvalues.flip(0), eigenvectors.T.flip(0)
        filters = (directions / torch.sqrt(eigenvalues + 5e-4)[:, None]).reshape(12, 3, 2, 2)
        stem.weight.copy_(torch.cat([filters, -filters]))
    stem.weight.requires_grad_(False)
    return net.to(memory_format=torch.channels_last)


def make_optimizer(
    net: nn.Module, total: int, peak_lr: float
) -> tuple[torch.optim.Optimizer, object]:
    # airbench's "decoupled" hyperparameters, turned back into torch SGD's (summed loss).
    unit = 1024 * (1 + 1 / (1 - MOMENTUM))
    lr, decay = peak_lr / unit, WEIGHT_DECAY * BATCH / unit
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    norm_biases = [p for n, p in trainable if p.ndim == 1 and n != "0.bias"]
    others = [p for n, p in trainable if not (p.ndim == 1 and n != "0.bias")]
    bias_lr = lr * BIAS_LR_SCALE
    optimizer = torch.optim.SGD(
        [
            {"params": norm_biases, "lr": bias_lr, "weight_decay": decay / bias_lr},
            {"params": others, "lr": lr, "weight_decay": decay / lr},
        ],
        momentum=MOMENTUM,
        nesterov=True,
    )
    peak = int(0.23 * total)  # linear 0.2 -> 1 -> 0.07

    def triangle(i: int) -> float:
        return 0.2 + 0.8 * i / peak if i < peak else 1 - 0.93 * (i - peak) / (total - peak)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, triangle)


def translated(padded: torch.Tensor, shift: int = 2) -> torch.Tensor:
    """A random crop of each image from its reflect-padded copy (up to ``shift`` px)."""
    offsets = torch.randint(0, 2 * shift + 1, (len(padded), 2))
    out = torch.empty(len(padded), 3, 32, 32).contiguous(memory_format=torch.channels_last)
    for dy in range(2 * shift + 1):
        for dx in range(2 * shift + 1):
            rows = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
            out[rows] = padded[rows, :, dy : dy + 32, dx : dx + 32]
    return out


class Lookahead:
    """Every 5 steps the weights move to a running average of themselves (airbench)."""

    def __init__(self, net: nn.Module) -> None:
        self.net, self.average = net, None

    def update(self, decay: float) -> None:
        values = [v for v in self.net.state_dict().values() if v.is_floating_point()]
        if self.average is None:
            self.average = [v.clone() for v in values]
            return
        for average, value in zip(self.average, values, strict=True):
            average.lerp_(value, 1 - decay)
            value.copy_(average)


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, views: int, amp) -> float:
    """Test accuracy with 1 view, or 6: mirrored, and shifted 1 px up-left / down-right."""
    net.eval()
    logits = []
    for x in images.split(1000):
        with amp():

            def mirrored(v: torch.Tensor) -> torch.Tensor:
                return 0.5 * net(v).float() + 0.5 * net(v.flip(-1)).float()

            if views == 1:
                logits.append(net(x).float())
                continue
            padded = F.pad(x, (1,) * 4, "reflect")
            shifted = [mirrored(padded[:, :, :32, :32]), mirrored(padded[:, :, 2:, 2:])]
            logits.append(0.5 * mirrored(x) + 0.25 * (shifted[0] + shifted[1]))
    net.train()
    return (torch.cat(logits).argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipe", choices=sorted(RECIPES), default="airbench94",
        help="airbench94 (widths 64/256/256) or its wider airbench95 (128/384/384)",
    )  # fmt: skip
    defaults = ", ".join(f"{name} {epochs:g}" for name, (_, _, epochs) in RECIPES.items())
    parser.add_argument("--epochs", type=float, help=f"default: the recipe's ({defaults})")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rejpeg", type=int, default=0, metavar="QUALITY",
        help="JPEG-compress every image once more at this quality (how much JPEG costs)",
    )  # fmt: skip
    parser.add_argument("--max-steps", type=int, default=0, help="stop early (smoke test)")
    args = parser.parse_args()

    def amp():
        if args.precision == "bf16":
            return torch.autocast("cpu", torch.bfloat16)
        return contextlib.nullcontext()

    widths, peak_lr, recipe_epochs = RECIPES[args.recipe]
    epochs = args.epochs or recipe_epochs
    torch.manual_seed(args.seed)
    train_x, train_y = load("train-*.parquet", args.rejpeg)
    test_x, test_y = load("test.parquet", args.rejpeg)
    net = make_net(train_x[:5000], widths)
    steps_per_epoch = len(train_x) // BATCH
    total = math.ceil(steps_per_epoch * epochs)
    optimizer, schedule = make_optimizer(net, total, peak_lr)
    lookahead = Lookahead(net)
    # Half the images mirrored once; then every other epoch all of them (alternating flip).
    flip_once = torch.rand(len(train_x), generator=torch.Generator().manual_seed(1)) < 0.5
    padded = F.pad(
        torch.where(flip_once.view(-1, 1, 1, 1), train_x.flip(-1), train_x), (2,) * 4, "reflect"
    )

    step, start = 0, time.perf_counter()
    for epoch in range(math.ceil(epochs)):
        net[0].bias.requires_grad_(epoch < WHITEN_BIAS_EPOCHS)
        images = translated(padded)
        images = images.flip(-1) if epoch % 2 else images
        order = torch.randperm(len(images))
        for i in range(steps_per_epoch):
            rows = order[i * BATCH : (i + 1) * BATCH]
            with amp():
                logits = net(images[rows])
            loss = F.cross_entropy(
                logits.float(), train_y[rows], label_smoothing=SMOOTHING, reduction="sum"
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if epoch >= LOOKAHEAD_START and step % LOOKAHEAD_EVERY == 0:
                lookahead.update(0.95**LOOKAHEAD_EVERY * (step / total) ** 3)
            if step == total or step == args.max_steps:
                break
        if lookahead.average is not None:
            lookahead.update(1.0)  # the net takes the average
        seconds = time.perf_counter() - start
        rate = step * BATCH / seconds
        print(
            f"epoch {epoch + 1}: step {step}/{total}, loss {loss.item() / BATCH:.4f}, "
            f"test {100 * accuracy(net, test_x, test_y, 1, amp):.2f}%, "
            f"{rate:.0f} samples/s, {seconds / 60:.1f} min of training",
            flush=True,
        )
        if step == args.max_steps:
            break
    print(f"final, 6 test-time views: {100 * accuracy(net, test_x, test_y, 6, amp):.2f}%")


if __name__ == "__main__":
    main()
