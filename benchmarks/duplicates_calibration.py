"""How similar true duplicates are, against different photos, for each model: the data behind
`clipsearch duplicates`' default threshold.

    python benchmarks/duplicates_calibration.py [--models SPEC,SPEC...] [--work DIR]

Builds a folder from real photos in ../shared/data: the 101 COCO-mini photos (JPEG, shorter
side 160 px) and 20 CIFAR-10 test images of each class upscaled 4x to 128 px (PNG), every
third darkened to a quarter of its light and every third to 6% (dim and night shots). Each
photo gets eight copies a person's library really holds: JPEG at quality 50, 75 and 95, half
the size, a 5% crop (2.5% off each side), another format (JPEG → PNG, PNG → JPEG), WebP, and
a copy stored rotated with an EXIF orientation that turns it back. The folder is indexed
with each model through `clipsearch.ingest.indexer` (the product's own decode, EXIF included), and
every pair of images is scored by the cosine of their stored embeddings.

Pairs of the same photo are duplicates; every other pair is not (different CIFAR-10 images
of one class are the hard ones). Prints, per model, the similarity of each kind of copy to
its original, the highest similarities between different photos, precision and recall of
duplicate pairs for embeddings alone at a range of thresholds, and the same for
`Index.duplicates` itself (embeddings, then fingerprints) at the thresholds in PRODUCT; the
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance

from clipsearch import Index
from clipsearch.ingest.indexer import IndexOptions, update_index
from clipsearch.query.snapshot import Snapshot

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CIFAR_PER_CLASS = 20
CIFAR_UPSCALE = 4
COPIES = ("jpeg50", "jpeg75", "jpeg95", "half", "crop5", "format", "webp", "exif_rotated")
PRODUCT = (0.85, 0.90, 0.95)
THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
RUNS = Path(__file__).resolve().parents[1] / "runs"
EXIF_ORIENTATION = 0x0112
ROTATED_90_CW = 6  # the stored pixels are turned 90° counter-clockwise; viewers turn them back
# Exposures the originals are given in turn: normal, dim (a quarter of the light), night.
EXPOSURES = (("normal", 1.0), ("dim", 0.25), ("night", 0.06))


@dataclass(frozen=True)
class Photo:
    name: str  # folder name in the set
    image: Image.Image
    label: str  # CIFAR-10 class, or "coco"
    format: str  # "JPEG" or "PNG": how the original is stored


def load_photos() -> list[Photo]:
    photos = []
    coco = pq.read_table(next((DATA / "coco_mini").glob("images-*.parquet")))
    for number, data in enumerate(coco.column("image").to_pylist()):
        raw = data["bytes"] if isinstance(data, dict) else data
        photos.append(
            Photo(f"coco{number:03d}", Image.open(io.BytesIO(raw)).convert("RGB"), "coco", "JPEG")
        )
    cifar = pq.read_table(DATA / "cifar10" / "test.parquet", columns=["image", "label_name"])
    taken: dict[str, int] = {}
    for data, label in zip(
        cifar.column("image").to_pylist(), cifar.column("label_name").to_pylist(), strict=True
    ):
        if taken.get(label, 0) >= CIFAR_PER_CLASS:
            continue
        taken[label] = taken.get(label, 0) + 1
        raw = data["bytes"] if isinstance(data, dict) else data
        small = Image.open(io.BytesIO(raw)).convert("RGB")
        size = (small.width * CIFAR_UPSCALE, small.height * CIFAR_UPSCALE)
        photos.append(
            Photo(f"{label}{taken[label]:02d}", small.resize(size, Image.BICUBIC), label, "PNG")
        )
    return [_exposed(photo, number) for number, photo in enumerate(photos)]


def _exposed(photo: Photo, number: int) -> Photo:
    """Every third photo as if taken in dim light, every third at night: different photos
    that are all dark look alike to the eye, to the models and in absolute grey levels."""
    kind, factor = EXPOSURES[number % len(EXPOSURES)]
    if factor == 1.0:
        return photo
    dark = ImageEnhance.Brightness(photo.image).enhance(factor)
    return Photo(f"{photo.name}-{kind}", dark, photo.label, photo.format)


def write_copies(photo: Photo, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image, ext = photo.image, "jpg" if photo.format == "JPEG" else "png"
    image.save(folder / f"original.{ext}", photo.format, quality=90)
    for quality in (50, 75, 95):
        image.save(folder / f"jpeg{quality}.jpg", "JPEG", quality=quality)
    image.resize((image.width // 2, image.height // 2), Image.LANCZOS).save(
        folder / f"half.{ext}", photo.format, quality=90
    )
    dx, dy = round(image.width * 0.025), round(image.height * 0.025)
    image.crop((dx, dy, image.width - dx, image.height - dy)).save(
        folder / f"crop5.{ext}", photo.format, quality=90
    )
    if photo.format == "JPEG":
        image.save(folder / "format.png", "PNG")
    else:
        image.save(folder / "format.jpg", "JPEG", quality=90)
    image.save(folder / "webp.webp", "WEBP", quality=80)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATED_90_CW
    image.transpose(Image.ROTATE_90).save(
        folder / "exif_rotated.jpg", "JPEG", quality=90, exif=exif
    )


def build_set(root: Path) -> list[Photo]:
    photos = load_photos()
    if not (root / "complete").exists():
        for photo in photos:
            write_copies(photo, root / photo.name)
        (root / "complete").touch()
    return photos


def embeddings(root: Path, index_dir: Path, spec: str) -> tuple[list[str], np.ndarray, float]:
    """Paths (relative to root) and stored embeddings of every image, indexed with ``spec``."""
    start = time.perf_counter()
    update_index([root], index_dir, spec, IndexOptions(workers=2))
    seconds = time.perf_counter() - start
    snapshot = Snapshot(index_dir)
    table = snapshot.table(["path", "embedding"])
    paths = [str(Path(p).relative_to(root)) for p in table.column("path").to_pylist()]
    return paths, snapshot.embeddings_of(table), seconds  # unit rows


def score(paths: list[str], vectors: np.ndarray, labels: dict[str, str]) -> dict:
    photo = np.array([p.split("/")[0] for p in paths])
    copy = np.array([Path(p).stem for p in paths])
    similarity = vectors @ vectors.T
    upper = np.triu(np.ones_like(similarity, bool), k=1)
    same = (photo[:, None] == photo[None, :]) & upper
    different = (photo[:, None] != photo[None, :]) & upper
    label = np.array([labels[p] for p in photo])
    same_class = different & (label[:, None] == label[None, :]) & (label[:, None] != "coco")
    result: dict = {"images": len(paths), "duplicate_pairs": int(same.sum())}
    originals = {p: i for i, (p, c) in enumerate(zip(photo, copy, strict=True)) if c == "original"}
    result["copy_to_original"] = {}
    for kind in COPIES:
        values = [
            similarity[i, originals[p]]
            for i, (p, c) in enumerate(zip(photo, copy, strict=True))
            if c == kind
        ]
        result["copy_to_original"][kind] = {
            "min": round(float(np.min(values)), 4),
            "p5": round(float(np.percentile(values, 5)), 4),
            "median": round(float(np.median(values)), 4),
        }
    negatives = similarity[different]
    result["different_photos"] = {
        "max": round(float(negatives.max()), 4),
        "p99.99": round(float(np.percentile(negatives, 99.99)), 4),
        "p99.9": round(float(np.percentile(negatives, 99.9)), 4),
        "same_class_max": round(float(similarity[same_class].max()), 4),
    }
    positives = similarity[same]
    result["at_threshold"] = {}
    for threshold in THRESHOLDS:
        true_pos = int((positives >= threshold).sum())
        false_pos = int((negatives >= threshold).sum())
        result["at_threshold"][f"{threshold:.2f}"] = {
            "precision": round(true_pos / max(true_pos + false_pos, 1), 4),
            "recall": round(true_pos / len(positives), 4),
            "false_pairs": false_pos,
        }
    return result


def product(index_dir: Path, root: Path, paths: list[str]) -> dict:
    """Precision and recall of the pairs `Index.duplicates` puts in one group."""
    photo_of = {str(root / p): p.split("/")[0] for p in paths}
    photos = [p.split("/")[0] for p in paths]
    truth = sum(photos.count(p) * (photos.count(p) - 1) // 2 for p in set(photos))
    result = {}
    for threshold in PRODUCT:
        start = time.perf_counter()
        groups = Index.open(index_dir).duplicates(threshold)
        seconds = time.perf_counter() - start
        right = wrong = 0
        for group in groups:
            members = [photo_of[image.path] for image in group.images]
            for i, first in enumerate(members):
                for second in members[i + 1 :]:
                    right += first == second
                    wrong += first != second
        result[f"{threshold:.2f}"] = {
            "precision": round(right / max(right + wrong, 1), 4),
            "recall": round(right / truth, 4),
            "false_pairs": wrong,
            "groups": len(groups),
            "seconds": round(seconds, 2),
        }
    return result


def default_models() -> list[str]:
    runs = sorted(str(p) for p in RUNS.glob("*") if (p / "open_clip_model.safetensors").exists())
    return ["bundled:cifar10-small", *runs, "random:ViT-B-32"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", help="comma-separated specs (default: bundled, runs/*, random:ViT-B-32)"
    )
    parser.add_argument(
        "--work", type=Path, help="for the image set and the indexes (default: temp)"
    )
    args = parser.parse_args()
    if not (DATA / "coco_mini").is_dir():
        raise SystemExit(f"needs ../shared/data beside the repository ({DATA} is missing)")
    work = args.work or Path(tempfile.mkdtemp(prefix="clipsearch-dups-"))
    photos = build_set(work / "set")
    labels = {p.name: p.label for p in photos}
    results = {}
    for spec in args.models.split(",") if args.models else default_models():
        index_dir = work / ("index-" + "".join(c if c.isalnum() else "-" for c in spec))
        paths, vectors, seconds = embeddings(work / "set", index_dir, spec)
        results[spec] = {"index_s": round(seconds, 1), **score(paths, vectors, labels)}
        results[spec]["product"] = product(index_dir, work / "set", paths)
        print(json.dumps({spec: results[spec]}), file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
