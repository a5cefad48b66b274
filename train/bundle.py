"""Make the files clipsearch ships in ``clipsearch/bundled``: a trained model and sample photos.

    clipsearch train train/cifar10-10min.toml      # → runs/cifar10-10min (10 min on 2 cores)
    python train/bundle.py runs/cifar10-10min

1. exports the checkpoint to ONNX and shrinks it for shipping (``export.shrink_for_bundling``:
   int8 token table, gzipped tokenizer);
2. checks the shrunk model against the plain export on all 10,000 CIFAR-10 test images
   (zero-shot top-1 through `clipsearch eval`, the same for both) and on its text embeddings;
3. writes it to ``clipsearch/bundled/NAME`` (``--model bundled:NAME``) and the first
   ``--per-class`` test images of each class to ``clipsearch/bundled/cifar10-samples.parquet``
   (test images: the model never saw them);
4. prints the figures and file sizes that go into clipsearch/bundled/README.md and RESULTS.

Needs the torch extra and ../shared/data. The files are committed, so run it only to change them:
every version stays in the repository's history.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
TEST_SET = ROOT.parent / "shared/data/cifar10/test.parquet"


def zero_shot_top1(model_dir: Path, data: Path) -> float:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipsearch",
            "eval",
            "--data",
            str(data),
            "--model",
            str(model_dir),
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(result.stdout)["zeroshot_top1"])


def text_agreement(plain: Path, shrunk: Path, labels: list[str]) -> float:
    """The lowest cosine between the two models' embeddings of the zero-shot prompts."""
    from clipsearch.model import Model

    prompts = [f"a photo of a {label}." for label in labels] + ["a red car on a road"]
    a = Model.load(str(plain)).embed_texts(prompts)
    b = Model.load(str(shrunk)).embed_texts(prompts)
    return float(np.min(np.sum(a * b, axis=1)))


def write_samples(data: Path, out: Path, per_class: int) -> pa.Table:
    table = pq.read_table(data, columns=["image", "label_name"])
    labels = table.column("label_name").to_pylist()
    taken: dict[str, int] = {}
    rows = []
    for row, label in enumerate(labels):
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            rows.append(row)
    samples = table.take(rows).append_column("test_row", pa.array(rows, pa.int32()))
    pq.write_table(samples, out, compression="none")  # PNG bytes do not compress further
    return samples


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint from `clipsearch train`")
    parser.add_argument("--name", default="cifar10-small", help="ships as bundled:NAME")
    parser.add_argument("--per-class", type=int, default=30, help="sample images per class")
    parser.add_argument("--data", type=Path, default=TEST_SET, help="CIFAR-10 test Parquet")
    args = parser.parse_args()

    from clipsearch.bundled import BUNDLED_DIR, SAMPLES
    from clipsearch.model.export import export_model, shrink_for_bundling
    from clipsearch.model.spec import parse_spec

    with tempfile.TemporaryDirectory() as tmp:
        plain, shrunk = Path(tmp) / "plain", Path(tmp) / "shrunk"
        export_model(parse_spec(str(args.checkpoint.resolve())), plain)
        shutil.copytree(plain, shrunk)
        shrink_for_bundling(shrunk)
        labels = sorted(set(pq.read_table(args.data, columns=["label_name"])[0].to_pylist()))
        figures = {
            "checkpoint": str(args.checkpoint),
            "zeroshot_top1_export": zero_shot_top1(plain, args.data),
            "zeroshot_top1_bundled": zero_shot_top1(shrunk, args.data),
            "min_text_cosine": round(text_agreement(plain, shrunk, labels), 6),
            "export_bytes": sum(p.stat().st_size for p in plain.iterdir()),
        }
        target = BUNDLED_DIR / args.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(shrunk, target)
    samples = write_samples(args.data, SAMPLES, args.per_class)
    files = sorted([*target.iterdir(), SAMPLES])
    figures |= {
        "bundled_bytes": sum(p.stat().st_size for p in target.iterdir()),
        "samples": samples.num_rows,
        "samples_bytes": SAMPLES.stat().st_size,
        "files": {str(p.relative_to(ROOT)): [p.stat().st_size, sha256(p)] for p in files},
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
