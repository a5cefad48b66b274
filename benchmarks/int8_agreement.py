"""Does int8 agree with fp32? The onnx engine's two precisions on the 10,000 CIFAR-10 test images.

    python benchmarks/int8_agreement.py runs/cifar10-tiny runs/cifar10-10min runs/cifar10-lit

For each checkpoint (models this project trains: see train/), both precisions of the same
export embed every test image and the class prompts (80 CLIP templates), and the script
reports: mean cosine between an image's fp32 and int8 embeddings, the mean overlap of the
top-10 text→image results (one query per class, "a photo of a CLASS.", plus the free-text
queries of train/cifar10-unseen-queries.csv), and zero-shot top-1 in both precisions.
int8 may become an architecture's CPU default only where mean cosine >= 0.995, top-10
overlap >= 0.9 and top-1 within 0.5 points (issue 16); the verdict is printed per model.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from clipsearch.base.images import to_rgb
from clipsearch.model import Model
from clipsearch.zeroshot.templates import classifier_weights, get_templates

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "cifar10" / "test.parquet"
QUERIES = REPO / "train" / "cifar10-unseen-queries.csv"
GOALS = {"mean_cosine": 0.995, "top10_overlap": 0.9, "top1_gap": 0.5}


def load_images(path: Path, model: Model) -> tuple[np.ndarray, np.ndarray, list[str]]:
    table = pq.read_table(path, columns=["image", "label_name"])
    labels = table.column("label_name").to_pylist()
    classes = sorted(set(labels))
    pixels = np.stack(
        [
            model.preprocess(to_rgb(Image.open(io.BytesIO(data))))
            for data in table.column("image").to_pylist()
        ]
    )
    return pixels, np.array([classes.index(label) for label in labels]), classes


def embed(model: Model, pixels: np.ndarray, batch: int = 500) -> np.ndarray:
    return np.concatenate(
        [model.embed_pixels(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    )


def top10(queries: np.ndarray, images: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ images.T), axis=1)[:, :10]


def measure(checkpoint: str, data: Path) -> dict:
    fp32 = Model.load(checkpoint, engine="onnx", precision="fp32")
    int8 = Model.load(checkpoint, engine="onnx", precision="int8")
    pixels, truth, classes = load_images(data, fp32)
    templates = get_templates("default")
    queries = [f"a photo of a {c}." for c in classes]
    if QUERIES.is_file():
        with QUERIES.open(newline="", encoding="utf-8") as f:
            queries += [row["query"] for row in csv.DictReader(f)]
    result: dict = {"model": checkpoint, "arch": fp32.identity.arch, "images": len(pixels)}
    embedded = {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        start = time.perf_counter()
        images = embed(model, pixels)
        result[f"{name}_img_per_s"] = round(len(pixels) / (time.perf_counter() - start), 1)
        weights = classifier_weights(model.embed_texts, classes, templates)
        result[f"top1_{name}"] = round(
            100 * float(((images @ weights.T).argmax(1) == truth).mean()), 2
        )
        embedded[name] = (images, model.embed_texts(queries))
    (i32, q32), (i8, q8) = embedded["fp32"], embedded["int8"]
    result["mean_cosine"] = round(float((i32 * i8).sum(1).mean()), 5)
    overlaps = [
        len(set(a) & set(b)) / 10 for a, b in zip(top10(q32, i32), top10(q8, i8), strict=True)
    ]
    result["top10_overlap"] = round(float(np.mean(overlaps)), 3)
    result["top1_gap"] = round(abs(result["top1_fp32"] - result["top1_int8"]), 2)
    result["int8_holds"] = (
        result["mean_cosine"] >= GOALS["mean_cosine"]
        and result["top10_overlap"] >= GOALS["top10_overlap"]
        and result["top1_gap"] <= GOALS["top1_gap"]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    rows = [measure(c, args.data) for c in args.checkpoints]
    print(
        "| model | arch | mean cosine | top-10 overlap | top-1 fp32 | top-1 int8 | img/s fp32 "
        "| img/s int8 | int8 holds |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['arch']} | {r['mean_cosine']:.4f} | {r['top10_overlap']:.3f} | "
            f"{r['top1_fp32']:.2f} | {r['top1_int8']:.2f} | {r['fp32_img_per_s']:.0f} | "
            f"{r['int8_img_per_s']:.0f} | {'yes' if r['int8_holds'] else 'no'} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
