"""Progress for long work: a rich bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import TaskID

MIN_SECONDS_FOR_RATE = 1.0


class PlainProgress:
    """One line every few seconds, for logs and pipes (no control characters)."""

    def __init__(
        self, label: str, every_seconds: float = 5.0, what: str = "files to embed"
    ) -> None:
        self.label = label
        self.what = what
        self.every = every_seconds
        self.total = self.done = 0
        self.started = self.last = 0.0

    def start(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.last = time.perf_counter()
        print(f"{self.label}: {total:,} {self.what}", file=sys.stderr, flush=True)

    def advance(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            elapsed = now - self.started
            line = f"{self.label}: {self.done:,}/{self.total:,}"
            # Work done within a moment (rows read from the catalog) has no rate to speak
            # of: "2,118,329.9 img/s" said nothing.
            if elapsed >= MIN_SECONDS_FOR_RATE and self.done:
                rate = self.done / elapsed
                eta = (self.total - self.done) / rate
                line += f" ({rate:,.1f} img/s, ETA {eta:,.0f} s)"
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A live bar with images/s and ETA."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.label = label
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]} img/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task: TaskID | None = None

    def start(self, total: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total, rate="-")

    def advance(self, count: int) -> None:
        assert self.task is not None, "advance() before start()"
        self.bar.advance(self.task, count)
        task = self.bar.tasks[0]
        if task.speed:
            self.bar.update(self.task, rate=f"{task.speed:,.1f}")

    def close(self) -> None:
        self.bar.stop()


def make_progress(label: str, what: str = "files to embed") -> PlainProgress | RichProgress:
    """``what``: the items counted, as the first plain line names them."""
    return RichProgress(label) if sys.stderr.isatty() else PlainProgress(label, what=what)
