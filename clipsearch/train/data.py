"""From a ``Source`` to training batches: captions, augmentation, sampling, DataLoader.

Everything random about a sample (which caption or template, the crop, the flip) is drawn
from a generator seeded by (seed, epoch, index), and the order of samples by (seed, epoch).
So a batch depends only on the step number: not on the number of workers or ranks, and a
resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clipsearch.base.images import DecodeError
from clipsearch.errors import ClipsearchError
from clipsearch.train.sources import Source, caption_key

log = logging.getLogger(__name__)
# A sample that cannot be decoded is replaced by the next one; give up after this many.
_MAX_SUBSTITUTES = 16


def train_transform(
    image_size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    crop_scale: Sequence[float] = (0.5, 1.0),
    flip: bool = True,
    translate: int = 0,
) -> Callable[[Image.Image], torch.Tensor]:
    """Random resized crop (+ horizontal flip), then the model's normalization.

    With ``translate`` > 0 the image is instead fitted to the model's size and shifted by up to
    that many pixels (a random crop of the reflect-padded image): at 32 px, where a resized crop
    blurs what little there is, this is the augmentation of the fast CIFAR-10 baselines."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    steps: list[Any]
    if translate > 0:
        steps = [
            T.Resize(image_size, interpolation=bicubic, antialias=True),
            T.CenterCrop(image_size),
            T.RandomCrop(image_size, padding=translate, padding_mode="reflect"),
        ]
    else:
        scale = (float(crop_scale[0]), float(crop_scale[1]))
        steps = [
            T.RandomResizedCrop(image_size, scale=scale, interpolation=bicubic, antialias=True)
        ]
    if flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    return T.Compose(steps)


class PairDataset(Dataset):
    """Item ``(epoch, i)`` -> (pixels, caption, key). Equal keys mark positives of each other:
    the class for class-labelled data, the caption text otherwise.

    ``alternate_flip``: image i is mirrored in every other epoch (whether it starts mirrored is
    drawn once per image) rather than by a coin each epoch, so any two consecutive epochs show
    both sides of every image (airbench's alternating flip; the transform must not flip)."""

    def __init__(
        self,
        source: Source,
        transform: Callable[[Image.Image], torch.Tensor],
        templates: Sequence[str],
        seed: int,
        alternate_flip: bool = False,
    ) -> None:
        self.source = source
        self.transform = transform
        self.templates = list(templates)
        self.seed = seed
        self.alternate_flip = alternate_flip
        self.by_label = source.captions is None
        if self.by_label and source.labels is None:
            raise ClipsearchError(f"{source.origin} has neither captions nor labels")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, str, int]:
        epoch, i = item
        rng = np.random.default_rng([self.seed, epoch, i])
        image, i = self._decode(i)
        caption, key = self.caption(i, rng)
        with torch.random.fork_rng(devices=[]):
            # CPU generator only: torch.manual_seed would also queue a lazy CUDA seeding.
            torch.default_generator.manual_seed(int(rng.integers(2**62)))
            pixels = self.transform(image)
        if self.alternate_flip and (epoch + self._first_side(i)) % 2:
            pixels = pixels.flip(-1)
        return pixels, caption, key

    def _first_side(self, i: int) -> int:
        return int(np.random.default_rng([self.seed, i, 1]).integers(2))

    def caption(self, i: int, rng: np.random.Generator) -> tuple[str, int]:
        if self.by_label:
            # __init__ checked there are labels; sources give class names with labels.
            assert self.source.labels is not None and self.source.classes is not None
            label = int(self.source.labels[i])
            template = self.templates[int(rng.integers(len(self.templates)))]
            return template.format(self.source.classes[label]), label
        assert self.source.captions is not None  # not by_label
        options = self.source.captions[i]
        text = options[int(rng.integers(len(options)))]
        return text, caption_key(text)

    def _decode(self, i: int) -> tuple[Image.Image, int]:
        for attempt in range(_MAX_SUBSTITUTES):
            j = (i + attempt) % len(self.source)
            try:
                return self.source.image(j), j
            except DecodeError as exc:
                log.warning("skipping %s: %s", self.source.describe(j), exc.reason)
        raise ClipsearchError(f"{_MAX_SUBSTITUTES} images in a row cannot be decoded near #{i}")


class Collate:
    """Stack pixels, tokenize the batch's captions in one call (in the worker)."""

    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        self.tokenizer = tokenizer

    def __call__(self, batch: list[tuple[torch.Tensor, str, int]]) -> dict[str, Any]:
        pixels, captions, keys = zip(*batch, strict=True)
        return {
            "images": torch.stack(pixels),
            "texts": self.tokenizer(list(captions)),
            "keys": torch.tensor(keys, dtype=torch.int64),
            "captions": list(captions),
        }


class StepSampler:
    """Per step, this rank's share of the global batch, as ``(epoch, index)`` items.

    Epoch e visits a permutation of all samples seeded by (seed, e), in global batches of
    ``global_batch`` (the last partial batch is dropped); rank r takes the r-th slice.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        seed: int,
        start_step: int,
        total_steps: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if global_batch % world:
            raise ClipsearchError(f"batch_size {global_batch} is not divisible by {world} ranks")
        self.steps_per_epoch = n // global_batch
        if self.steps_per_epoch == 0:
            raise ClipsearchError(f"batch_size {global_batch} is larger than the {n} samples")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start, self.total, self.rank, self.world = start_step, total_steps, rank, world

    def __len__(self) -> int:
        return max(self.total - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        local = self.global_batch // self.world
        perm, perm_epoch = None, -1
        for step in range(self.start, self.total):
            epoch, b = divmod(step, self.steps_per_epoch)
            if epoch != perm_epoch:
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
                perm_epoch = epoch
            assert perm is not None  # drawn in the first step
            batch = perm[b * self.global_batch : (b + 1) * self.global_batch]
            mine = batch[self.rank * local : (self.rank + 1) * local]
            yield [(epoch, int(i)) for i in mine]


def _worker_init(_: int) -> None:
    # Workers decode one image at a time: extra intra-op threads only oversubscribe the CPU.
    torch.set_num_threads(1)
    # On a CPU-bound run they would pre-empt the training threads, which wait on each other at
    # every parallel region; at low priority they fill idle time instead (as the indexer's).
    os.nice(19)


def train_loader(dataset: PairDataset, sampler: StepSampler, collate: Collate, workers: int):
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        # Workers' base seed comes from here, not from the global RNG a resumed run restores.
        generator=torch.Generator(),
    )


class EvalDataset(Dataset):
    """Item ``i`` -> (pixels, i), with the model's inference preprocessing."""

    def __init__(self, source: Source, preprocess: Callable[[Image.Image], torch.Tensor]) -> None:
        self.source, self.preprocess = source, preprocess

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            image = self.source.image(i)
        except DecodeError as exc:
            log.warning("reading %s as gray: %s", self.source.describe(i), exc.reason)
            image = Image.new("RGB", (64, 64), (128, 128, 128))
        return self.preprocess(image), i


def eval_loader(source: Source, preprocess: Callable, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        EvalDataset(source, preprocess),
        batch_size=batch_size,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        generator=torch.Generator(),
    )
