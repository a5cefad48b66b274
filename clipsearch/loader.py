"""Decode image files in parallel worker processes into model-ready batches.

A torch DataLoader does the work: each worker hashes, decodes (``clipsearch.decode``) and
preprocesses one file at a time, so the main process only runs the model. A file that cannot
be decoded comes back as a ``FailedFile`` with its reason instead of stopping the run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clipsearch.decode import DEFAULT_MAX_PIXELS, DecodeError, ImageInfo, load_image
from clipsearch.diff import content_hash
from clipsearch.scan import FileEntry


@dataclass
class DecodedFile:
    entry: FileEntry
    content_hash: str
    info: ImageInfo


@dataclass
class FailedFile:
    entry: FileEntry
    reason: str


@dataclass
class Batch:
    pixels: torch.Tensor  # (len(files), 3, H, W), ready for Model.embed_pixels
    files: list[DecodedFile]
    failures: list[FailedFile]


class _Files(Dataset):
    def __init__(
        self,
        entries: Sequence[FileEntry],
        preprocess: Callable[[Image.Image], torch.Tensor],
        min_side: int,
        max_pixels: int,
    ) -> None:
        self.entries = entries
        self.preprocess = preprocess
        self.min_side = min_side
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, DecodedFile | FailedFile]:
        entry = self.entries[i]
        try:
            digest = content_hash(entry.path, entry.size)
            image, info = load_image(entry.path, min_side=self.min_side, max_pixels=self.max_pixels)
            pixels = self.preprocess(image)
        except DecodeError as exc:
            return None, FailedFile(entry, exc.reason)
        except OSError as exc:
            return None, FailedFile(entry, f"unreadable: {exc.strerror or exc}".lower())
        return pixels, DecodedFile(entry, digest, info)


def _collate(items: list[tuple[torch.Tensor | None, DecodedFile | FailedFile]]) -> Batch:
    pixels = [p for p, _ in items if p is not None]
    files = [f for p, f in items if p is not None]
    failures = [f for p, f in items if p is None]
    stacked = torch.stack(pixels) if pixels else torch.empty(0)
    return Batch(stacked, files, failures)  # type: ignore[arg-type]


def _lower_priority(worker_id: int) -> None:
    """Decoders yield the CPU to the model: they fill idle time instead of stalling its threads."""
    os.nice(19)


def decoded_batches(
    entries: Sequence[FileEntry],
    preprocess: Callable[[Image.Image], torch.Tensor],
    min_side: int,
    batch_size: int = 64,
    workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Yield batches in the order of ``entries``; ``workers=0`` decodes in this process."""
    with warnings.catch_warnings():
        # torch warns when workers outnumber cores: ours do so on purpose, at low priority.
        warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
        loader = DataLoader(
            _Files(entries, preprocess, min_side, max_pixels),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=pin_memory,
            prefetch_factor=4 if workers else None,
            worker_init_fn=_lower_priority,
        )
        batches = iter(loader)  # the workers start (and torch checks their number) here
    yield from batches
