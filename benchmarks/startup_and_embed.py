"""CLI start-up and tiny-model embedding speed, each beside a peer measured in the same run.

    python benchmarks/startup_and_embed.py

- `clipsearch --help` wall time against a bare `python -c pass` (the interpreter's floor)
  and against `import torch, open_clip` (what --help must avoid).
- `clipsearch-tiny` embedding 32 images: preprocessed pixels, and from PIL images.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall(cmd: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup() -> None:
    clipsearch = str(Path(sys.executable).with_name("clipsearch"))
    floor = wall([sys.executable, "-c", "pass"])
    help_time = wall([clipsearch, "--help"])
    heavy = wall([sys.executable, "-c", "import torch, open_clip"], repeats=3)
    print(f"python -c pass              {floor * 1000:7.0f} ms")
    print(
        f"clipsearch --help           {help_time * 1000:7.0f} ms  ({help_time / floor:.1f}x floor)"
    )
    print(f"import torch, open_clip     {heavy * 1000:7.0f} ms  ({heavy / help_time:.0f}x --help)")


def embed() -> None:
    import numpy as np
    import torch
    from PIL import Image

    from clipsearch.model import Model

    model = Model.load("random:clipsearch-tiny", engine="torch")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(32)]
    pixels = np.stack([model.preprocess(im) for im in images])
    model.embed_pixels(pixels)

    def median_of(fn, repeats: int = 20) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    pix = median_of(lambda: model.embed_pixels(pixels))
    pil = median_of(lambda: model.embed_images(images))
    threads = torch.get_num_threads()
    print(f"tiny: 32 preprocessed images {pix * 1000:6.1f} ms (torch threads {threads})")
    print(f"tiny: 32 PIL images          {pil * 1000:6.1f} ms (preprocess included)")


if __name__ == "__main__":
    startup()
    embed()
