"""Progress lines for pipes and logs: a rate only where one means something."""

from __future__ import annotations

from clipsearch.cli import progress
from clipsearch.cli.progress import PlainProgress


class Clock:
    """A clock the test moves by hand (rates and ETAs from known times)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_work_done_in_a_moment_shows_no_rate(capsys, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    bar = PlainProgress("duplicates", what="images to compare")
    bar.start(300)
    clock.now += 0.0001  # rows read from the catalog: 300 in a tenth of a millisecond
    bar.advance(300)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["duplicates: 300 images to compare", "duplicates: 300/300"]


def test_long_work_shows_its_rate_and_eta(capsys, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    bar = PlainProgress("embedding", every_seconds=5.0)
    bar.start(1000)
    clock.now += 10.0
    bar.advance(250)
    clock.now += 10.0
    bar.advance(250)
    lines = capsys.readouterr().err.splitlines()
    assert lines[1] == "embedding: 250/1,000 (25.0 img/s, ETA 30 s)"
    assert lines[2] == "embedding: 500/1,000 (25.0 img/s, ETA 20 s)"
