"""clipsearch against rclip 3.3.0, side by side in one run, on the same photos and weights.

    python -m venv /tmp/rclip-venv && /tmp/rclip-venv/bin/pip install rclip==3.3.0
    python benchmarks/vs_rclip.py --rclip /tmp/rclip-venv/bin/rclip [--images 64]

Both tools run ViT-B-32-256 with the same random weights (seed 0): clipsearch exports
`random:ViT-B-32-256` once (its export cache, timed apart), and the same two graphs are
written where rclip looks for its model (`$RCLIP_DATADIR/ViT-B-32-256-datacomp_s34b_b86k/
visual.onnx` and `textual.onnx`, input `input`, output `output`), so rclip runs offline.
The photos are N noisy 12-MP JPEGs. Measured, each command a fresh process (wall time and
peak RSS from /usr/bin/time):

- index + query: rclip `-f -t 3 "a photo of a dog"` in the folder, from an empty database;
  clipsearch `index` then `query` (two commands, summed), from an empty index;
- cold query: rclip `-n -f -t 3 dog`; clipsearch `query dog -k 3 --local --warm-for 0`;
- warm query: clipsearch's second query, answered by the background server the first left;
- the top 3 of both tools for both queries.
rclip is a peer for this benchmark only: never a dependency of clipsearch.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SPEC = "random:ViT-B-32-256"
RCLIP_MODEL_DIR = "ViT-B-32-256-datacomp_s34b_b86k"


def photos(folder: Path, count: int) -> list[Path]:
    """Noisy 4000x3000 JPEGs (a smooth random scene plus sensor-like noise), made once."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo-{i:03d}.jpg"
        if not path.exists():
            rng = np.random.default_rng(i)
            scene = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
            big = np.asarray(scene.resize((4000, 3000), Image.Resampling.BICUBIC), np.int16)
            noisy = np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(path, quality=90)
        paths.append(path)
    return paths


def rclip_model(export_dir: Path, datadir: Path) -> None:
    """Our export's graphs under rclip's names (input/output renamed), plus the vocabulary."""
    import onnx

    target = datadir / RCLIP_MODEL_DIR
    target.mkdir(parents=True, exist_ok=True)
    for ours, theirs in (("image.onnx", "visual.onnx"), ("text.onnx", "textual.onnx")):
        if (target / theirs).exists():
            continue
        model = onnx.load(str(export_dir / ours))
        renames = {model.graph.input[0].name: "input", model.graph.output[0].name: "output"}
        for value in (*model.graph.input, *model.graph.output):
            value.name = renames.get(value.name, value.name)
        for node in model.graph.node:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]
        onnx.save(model, str(target / theirs))
    from open_clip.tokenizer import default_bpe

    (datadir / "tokenizer").mkdir(exist_ok=True)
    shutil.copy(default_bpe(), datadir / "tokenizer")


def measured(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one fresh process."""
    stats = cwd / ".time"
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(stats), *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return wall, int(stats.read_text().split()[-1]) / 1024, result.stdout


def top3(stdout: str) -> list[str]:
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return [Path(line.split()[-1]).name for line in lines[:3]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rclip", required=True, help="the rclip executable (its own venv)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/clipsearch-vs-rclip"))
    args = parser.parse_args()
    work = args.work.absolute()
    folder = work / "photos"
    photos(folder, args.images)
    # rclip runs from its wheel, whose modules pip compiled at install; clipsearch may run
    # from a source checkout where PYTHONDONTWRITEBYTECODE keeps them uncompiled (~10 ms a
    # process): compile them once, as an installed package is.
    compileall.compile_dir(str(REPO / "clipsearch"), quiet=1)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CLIPSEARCH_CACHE": str(work / "cache")}
    env["RCLIP_DATADIR"] = str(work / "rclip-data")
    os.environ["CLIPSEARCH_CACHE"] = env["CLIPSEARCH_CACHE"]
    from clipsearch.model import export
    from clipsearch.model.spec import parse_spec

    start = time.perf_counter()
    export_dir = export.ensure_cached_export(parse_spec(SPEC), None)
    export_seconds = time.perf_counter() - start
    rclip_model(export_dir, work / "rclip-data")
    cli = str(Path(sys.executable).with_name("clipsearch"))
    index_dir = str(work / "index")
    ours_query = [cli, "query", "--index", index_dir, "-k", "3", "--paths"]

    def fresh() -> None:
        shutil.rmtree(index_dir, ignore_errors=True)
        for db in (work / "rclip-data").glob("db.sqlite3*"):
            db.unlink()

    rows: dict[str, dict[str, list[float]]] = {}

    def record(name: str, wall: float, rss: float) -> None:
        entry = rows.setdefault(name, {"wall": [], "rss": []})
        entry["wall"].append(wall)
        entry["rss"].append(rss)

    tops: dict[str, list[str]] = {}
    for _ in range(max(1, args.repeats // 2)):  # indexing: fewer repeats, it is long
        fresh()
        wall, rss, out = measured([args.rclip, "-f", "-t", "3", "a photo of a dog"], folder, env)
        record("index + query: rclip", wall, rss)
        tops["rclip: a photo of a dog"] = top3(out)
        wall_i, rss_i, _ = measured(
            [cli, "index", str(folder), "--model", SPEC, "--index", index_dir], folder, env
        )
        wall_q, rss_q, out = measured(
            [*ours_query, "a photo of a dog", "--local", "--warm-for", "0"], folder, env
        )
        record("index + query: clipsearch", wall_i + wall_q, max(rss_i, rss_q))
        tops["clipsearch: a photo of a dog"] = top3(out)
    for _ in range(args.repeats):
        wall, rss, out = measured([args.rclip, "-n", "-f", "-t", "3", "dog"], folder, env)
        record("cold query: rclip", wall, rss)
        tops["rclip: dog"] = top3(out)
        wall, rss, out = measured([*ours_query, "dog", "--local", "--warm-for", "0"], folder, env)
        record("cold query: clipsearch", wall, rss)
        tops["clipsearch: dog"] = top3(out)
    measured([*ours_query, "dog", "--warm-for", "120"], folder, env)  # leaves the server
    time.sleep(5)
    for _ in range(args.repeats):
        wall, rss, _ = measured([*ours_query, "dog"], folder, env)
        record("warm query: clipsearch", wall, rss)
    server = json.loads((Path(index_dir) / "server.json").read_text())
    os.kill(server["pid"], 15)  # the background server: stop it now rather than when idle

    summary = {
        name: {k: statistics.median(v) for k, v in entry.items()} for name, entry in rows.items()
    }
    print(
        f"\n{args.images} noisy 12-MP JPEGs, {SPEC} random weights (seed 0), "
        f"{os.cpu_count()} CPUs; medians; clipsearch export once: {export_seconds:.1f} s\n"
    )
    print("| what | wall s | peak RSS MiB |")
    print("| --- | ---: | ---: |")
    for name, values in summary.items():
        print(f"| {name} | {values['wall']:.2f} | {values['rss']:.0f} |")
    for what in ("index + query", "cold query"):
        ours, theirs = summary[f"{what}: clipsearch"], summary[f"{what}: rclip"]
        print(
            f"\n{what}: clipsearch/rclip wall {ours['wall'] / theirs['wall']:.2f}x, "
            f"RSS {ours['rss'] / theirs['rss']:.2f}x"
        )
    for query in ("a photo of a dog", "dog"):
        same = tops[f"rclip: {query}"] == tops[f"clipsearch: {query}"]
        print(
            f"top 3 for {query!r}: {'same' if same else 'DIFFERENT'} "
            f"(rclip {tops[f'rclip: {query}']}, clipsearch {tops[f'clipsearch: {query}']})"
        )
    print(json.dumps({"summary": summary, "top3": tops}))


if __name__ == "__main__":
    main()
