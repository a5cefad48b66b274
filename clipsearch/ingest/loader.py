"""Decode image files in parallel worker processes into model-ready batches.

Each worker hashes, decodes (``clipsearch.base.images``) and preprocesses a few files at a time,
so the main process only runs the model. A file that cannot be decoded comes back as a
``FailedFile`` with its reason instead of stopping the run, and so does a file whose decoder
crashes its worker (the files that worker held are decoded again). A plain process pool
(``concurrent.futures``): no torch, so the onnx engine's indexing never imports it.

Workers run at the lowest priority (they fill the model's idle time instead of stalling
its threads), ignore Ctrl-C (the main process stops them), and on Linux are killed by the
kernel when the main process dies, so a killed indexer leaves no worker behind.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
from PIL import Image

from clipsearch.base import fingerprint
from clipsearch.base.images import DEFAULT_MAX_PIXELS, DecodeError, ImageInfo, load_image
from clipsearch.errors import ClipsearchError
from clipsearch.ingest.diff import content_hash
from clipsearch.ingest.scan import FileEntry
from clipsearch.ocr.reader import READ_MIN_SIDE, TextLine, TextReader

logger = logging.getLogger(__name__)
FILES_PER_TASK = 8  # small tasks keep the workers evenly busy; order is restored below
_PR_SET_PDEATHSIG = 1


@dataclass
class DecodedFile:
    entry: FileEntry
    content_hash: str
    info: ImageInfo
    fingerprint: bytes  # clipsearch.base.fingerprint: 8x8 grey levels of the upright image
    text_lines: list[TextLine] | None = None  # the words read (OCR); None: not asked to read


@dataclass
class FailedFile:
    entry: FileEntry
    reason: str


@dataclass
class Batch:
    pixels: np.ndarray  # (len(files), 3, H, W) float32, ready for Model.embed_pixels
    files: list[DecodedFile]
    failures: list[FailedFile]


Decoded = tuple[np.ndarray | None, DecodedFile | FailedFile]


class _Decoder:
    """Decode and preprocess files; picklable, so it runs in worker processes."""

    def __init__(
        self,
        preprocess: Callable[[Image.Image], Any],
        min_side: int,
        max_pixels: int,
        reader: TextReader | None = None,
    ) -> None:
        self.preprocess = preprocess
        self.min_side = min_side
        self.max_pixels = max_pixels
        self.reader = reader

    def __call__(self, entries: Sequence[FileEntry]) -> list[Decoded]:
        return [self.one(entry) for entry in entries]

    def one(self, entry: FileEntry) -> Decoded:
        try:
            digest = content_hash(entry.path, entry.size)
            image, info = load_image(entry.path, min_side=self.min_side, max_pixels=self.max_pixels)
            pixels = np.asarray(self.preprocess(image), dtype=np.float32)
            picture = fingerprint.of_image(image)
            if self.reader is not None and image.size != (info.width, info.height):
                # Text needs more pixels than the model. Decoded again, larger, rather than
                # once for both: the model's pixels, so the embeddings, stay those of an
                # index that reads no text (a decode costs a fraction of the reading).
                image, _ = load_image(
                    entry.path, min_side=READ_MIN_SIDE, max_pixels=self.max_pixels
                )
        except DecodeError as exc:
            return None, FailedFile(entry, exc.reason)
        except OSError as exc:
            return None, FailedFile(entry, f"unreadable: {exc.strerror or exc}".lower())
        lines = self._read_text(entry, image) if self.reader else None
        return pixels, DecodedFile(entry, digest, info, picture, lines)

    def _read_text(self, entry: FileEntry, image: Image.Image) -> list[TextLine]:
        """The text of a decoded photo; one the reader fails on is a photo without text,
        never a failed file (the photo itself is fine)."""
        assert self.reader is not None
        try:
            return self.reader.read(image)
        except ClipsearchError:
            raise  # the models themselves: the run cannot go on
        except Exception as exc:
            logger.warning("cannot read the text in %s: %s", entry.path, exc)
            return []


def decoded_batches(
    entries: Sequence[FileEntry],
    preprocess: Callable[[Image.Image], Any],
    min_side: int,
    batch_size: int = 64,
    workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    read_text: bool = False,
) -> Iterator[Batch]:
    """Yield batches in the order of ``entries``; ``workers=0`` decodes in this process.
    ``read_text``: each decoded file also carries the lines of text read in it (OCR)."""
    # One thread per worker (they run side by side); all cores when this process reads.
    reader = TextReader(threads=1 if workers else -1) if read_text else None
    decoder = _Decoder(preprocess, min_side, max_pixels, reader)
    tasks = (entries[i : i + FILES_PER_TASK] for i in range(0, len(entries), FILES_PER_TASK))
    if workers == 0:
        results: Iterable[list[Decoded]] = map(decoder, tasks)
    else:
        # Enough tasks in flight for two batches ahead, and never an unbounded backlog of
        # decoded pixels when the model is the slower side.
        window = max(2 * workers, 2 * -(-batch_size // FILES_PER_TASK))
        results = _in_order(decoder, tasks, workers, window)
    pending: list[Decoded] = []
    for decoded in results:
        pending += decoded
        while len(pending) >= batch_size:
            yield _collate(pending[:batch_size])
            pending = pending[batch_size:]
    if pending:
        yield _collate(pending)


def _in_order(
    decoder: _Decoder, tasks: Iterator[Sequence[FileEntry]], workers: int, window: int
) -> Iterator[list[Decoded]]:
    """Decode ``tasks`` in ``workers`` processes, results in the order of the tasks.

    A worker that dies (a decoder crashing on a file, the kernel's OOM killer, a kill) takes
    the tasks in flight with it: those are decoded again one file at a time, and a file that
    kills its worker again is a failed file; the run goes on."""
    # A forked worker must never collect the parent's garbage: finalizing it there (an ONNX
    # Runtime session of an earlier query, its threads gone with the fork) crashed a worker.
    gc.freeze()
    pool = _Workers(decoder, workers)
    try:
        in_flight = deque((task, pool.submit(task)) for task in islice(tasks, window))
        while in_flight:
            task, future = in_flight.popleft()
            try:
                done = future.result()
            except BrokenProcessPool:
                pool.restart()
                for lost, result in [(task, future), *in_flight]:
                    finished = result.done() and result.exception() is None
                    yield result.result() if finished else pool.one_by_one(lost)
                in_flight = deque((task, pool.submit(task)) for task in islice(tasks, window))
                continue
            for task in islice(tasks, 1):
                in_flight.append((task, pool.submit(task)))
            yield done
    finally:  # also on an exception or an abandoned generator
        pool.stop()
        gc.unfreeze()


class _Workers:
    """The decode worker processes (a ProcessPoolExecutor: a worker's death breaks it,
    where multiprocessing.Pool would wait forever for the task that died with it)."""

    def __init__(self, decoder: _Decoder, workers: int) -> None:
        self.decoder, self.workers = decoder, workers
        self.executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
        return ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self.decoder, os.getpid()),
        )

    def submit(self, task: Sequence[FileEntry]) -> Future[list[Decoded]]:
        try:
            return self.executor.submit(_decode, task)
        except BrokenProcessPool as exc:  # a worker died since the last result: said there
            future: Future[list[Decoded]] = Future()
            future.set_exception(exc)
            return future

    def one_by_one(self, task: Sequence[FileEntry]) -> list[Decoded]:
        decoded: list[Decoded] = []
        for entry in task:
            try:
                decoded += self.submit([entry]).result()
            except BrokenProcessPool:
                logger.warning("a decode worker died on %s", entry.path)
                decoded.append((None, FailedFile(entry, "its decoder crashed")))
                self.restart()
        return decoded

    def restart(self) -> None:
        self.stop()
        self.executor = self._start()

    def stop(self) -> None:
        """Stop the workers now: a worker would otherwise finish its task first (seconds,
        when it reads text) and hold up a Ctrl-C."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in list((getattr(self.executor, "_processes", None) or {}).values()):
            process.kill()


_worker_decoder: _Decoder | None = None


def _start_worker(decoder: _Decoder, parent: int) -> None:
    global _worker_decoder
    _worker_decoder = decoder
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(19)
    if "torch" in sys.modules:
        # A forked child must not enter the parent's OpenMP thread pool (it deadlocks once
        # the parent has run the model); one thread, as torch's own DataLoader workers do.
        import torch

        torch.set_num_threads(1)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)


def _decode(entries: Sequence[FileEntry]) -> list[Decoded]:
    assert _worker_decoder is not None
    return _worker_decoder(entries)


def _collate(items: list[Decoded]) -> Batch:
    pixels = [p for p, _ in items if p is not None]
    files = [f for p, f in items if p is not None]
    failures = [f for p, f in items if p is None]
    stacked = np.stack(pixels) if pixels else np.empty((0,), np.float32)
    return Batch(stacked, files, failures)  # type: ignore[arg-type]
