"""Text in photos: is a photo found by a word written in it, and what does reading cost?

Photos: CIFAR-10 test images (real photos the bundled model knows), enlarged to 512 px;
half of them get one word each (a name, a code, a number, a plain word: every word on one
photo only), in several fonts, sizes (12-80 px high), colours, on the photo or on a plate,
some lines tilted and some photos turned 90/180/270 degrees. The same photos are indexed
with `--ocr` and without, with the bundled model, and each word is searched for as a user
would (`Index.search(word, k=5)`):

- words: the share found in the top 5, for all words and for words >= 20 px high; with OCR
  and without (the baseline embeddings alone reach); and how many photos without the word
  came above the true one;
- meaning: precision@10 of "a photo of a CLASS" over both indexes (no regression);
- speed (`--speed`, below): what reading costs an index run of a real-sized model;
- word search at scale (`--texts 100000`): the words of that many photos (made up, a few
  lines each, a third of the photos with none), folded once (what a server keeps per
  snapshot, and what a cold `clipsearch query` pays), then p50 of a ranking over them, and
  the size of the `text` column in Parquet (the whole "text index").

    python benchmarks/ocr_words.py --photos 200     # words found, meaning
    python benchmarks/ocr_words.py --texts 100000   # word search at scale only
    python benchmarks/ocr_words.py --speed          # what reading costs an index run

`--speed`: the 200 JPEGs of 4000x3000 of index_throughput.py (COCO-mini, enlarged) and
1,000 of the photos above, a quarter with a word, indexed with `random:ViT-B-32` (random
weights, the real compute) with and without reading (images/s once the pipeline is full);
beside them the ceiling of a run that reads on this CPU, measured in the same run: all
cores busy with nothing but decoding, reading (CPU per file, one thread, as a decode
worker) and the model (CPU per image).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from clipsearch import Index
from clipsearch.ingest.indexer import IndexOptions, update_index

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "test.parquet"
MODEL = "bundled:cifar10-small"
SPEED_MODEL = "random:ViT-B-32"  # random weights, the real compute of the common model
FONTS = [
    None,  # Pillow's own (Aileron)
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Italic.ttf",
]
NAMES = ["Müller", "Bäckerei", "Oslo", "Zürich", "Kowalski", "Dubois", "Ødegaard", "Nguyen",
         "García", "Schröder", "Lindqvist", "Fernández", "Kaffeehaus", "Brasserie", "Invoice",
         "Receipt", "Parking", "Pharmacy", "Boulangerie", "Station"]  # fmt: skip


def words(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct words: names and plain words, codes, numbers with a word."""
    made: dict[str, None] = {}  # in the order made
    while len(made) < count:
        kind = len(made) % 4 if len(made) < 400 else rng.randrange(4)  # EXIT 1-99 runs out
        if kind == 0:
            word = rng.choice(NAMES) + ("" if rng.random() < 0.5 else f" {rng.randint(2, 99)}")
        elif kind == 1:
            letter = rng.choice("ABCDEFGHKLMNPRSTUVWXYZ")
            word = f"{letter}{rng.randint(1, 9)}-{rng.randint(1000, 9999)}"
        elif kind == 2:
            word = f"{rng.choice(['EXIT', 'GATE', 'LOT', 'ROOM', 'BUS'])} {rng.randint(1, 99)}"
        else:
            word = "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(4))
        made[word] = None
    return list(made)


def font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None or not Path(path).is_file():
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size)


def make_photos(
    folder: Path, count: int, seed: int, text_every: int = 2
) -> dict[str, tuple[str, int]]:
    """Write ``count`` photos; one in ``text_every`` with a word. {word: (file name, text
    height)}."""
    rng = random.Random(seed)
    table = pq.read_table(SHARED, columns=["image", "label_name"]).slice(0, count)
    chosen = words(len(range(0, count, text_every)), rng)
    truth = {}
    for row in range(count):
        image = Image.open(io.BytesIO(table["image"][row].as_py())).convert("RGB")
        image = image.resize((512, 512), Image.BICUBIC)
        label = table["label_name"][row].as_py()
        name = f"{label}-{row:04d}.jpg"
        if row % text_every == 0:
            word = chosen[row // text_every]
            height = rng.choice([12, 16, 20, 24, 32, 40, 56, 80])
            typeface = font(rng.choice(FONTS), height)
            layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
            draw = ImageDraw.Draw(layer)
            left, top, right, bottom = draw.textbbox((0, 0), word, font=typeface)
            x = rng.randint(4, max(4, 508 - (right - left)))
            y = rng.randint(4, max(4, 508 - (bottom - top)))
            dark = rng.random() < 0.5
            ink = (rng.randint(0, 60),) * 3 if dark else (rng.randint(200, 255),) * 3
            if rng.random() < 0.5:  # on a plate
                plate = (235, 230, 220) if dark else (30, 35, 40)
                draw.rectangle(
                    (x + left - 4, y + top - 4, x + right + 4, y + bottom + 4), fill=plate
                )
            draw.text((x, y), word, font=typeface, fill=(*ink, 255))
            if rng.random() < 0.25:  # a tilted line
                layer = layer.rotate(rng.uniform(-15, 15), center=(x, y))
            image.paste(layer, (0, 0), layer)
            turn = rng.choice([0, 0, 0, 0, 0, 90, 180, 270])
            if turn:
                image = image.rotate(turn, expand=True)
            truth[word] = (name, height)
        image.save(folder / name, quality=90)
    return truth


def word_ranks(
    index_dir: Path, truth: dict[str, tuple[str, int]]
) -> tuple[dict[str, int | None], int]:
    """Each word's photo's rank in the top 5 (None: not there), and how many photos without
    any text came above a photo found."""
    index = Index.open(index_dir)
    with_text = {name for name, _ in truth.values()}
    ranks, textless_above = {}, 0
    for word, (name, _) in truth.items():
        names = [Path(h.path).name for h in index.search(word, k=5)]
        ranks[word] = names.index(name) + 1 if name in names else None
        if name in names:
            textless_above += sum(n not in with_text for n in names[: names.index(name)])
    return ranks, textless_above


def precision_at_10(index_dir: Path, labels: list[str]) -> float:
    index = Index.open(index_dir)
    found = []
    for label in labels:
        hits = index.search(f"a photo of a {label}", k=10)
        found.append(sum(Path(h.path).name.startswith(f"{label}-") for h in hits) / 10)
    return statistics.mean(found)


def search_at_scale(count: int, seed: int) -> dict[str, float]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq_write

    from clipsearch.query import words as word_search

    rng = random.Random(seed)
    vocabulary = words(5000, rng)
    texts = [
        "\n".join(
            " ".join(rng.choices(vocabulary, k=rng.randint(1, 4))) for _ in range(rng.randint(1, 3))
        )
        if rng.random() < 0.67
        else ""
        for _ in range(count)
    ]
    column = pa.array(texts)
    start = time.perf_counter()
    folded = word_search.fold_column(column)
    fold_ms = (time.perf_counter() - start) * 1000
    ids = np.arange(count)
    times = []
    for query in rng.sample(vocabulary, 40):
        start = time.perf_counter()
        word_search.rank(ids, folded, word_search.parse(query), 50)
        times.append((time.perf_counter() - start) * 1000)
    with tempfile.NamedTemporaryFile(suffix=".parquet") as file:
        pq_write.write_table(pa.table({"text": column}), file.name, compression="zstd")
        size = Path(file.name).stat().st_size
    return {
        "photos": count,
        "fold_ms": round(fold_ms, 1),
        "rank_p50_ms": round(statistics.median(times), 1),
        "rank_p90_ms": round(sorted(times)[int(0.9 * len(times))], 1),
        "text_column_mib": round(size / 2**20, 2),
    }


def speed(large: int, small: int, seed: int) -> list[dict[str, float | str]]:
    """Indexing with and without reading, on the issue's two sets, beside the ceiling that
    this CPU allows a run that reads (all cores busy with decoding, reading and the model)."""
    from index_throughput import Timer, ceiling, large_jpegs

    from clipsearch.base.images import DEFAULT_MAX_PIXELS
    from clipsearch.ingest.loader import _Decoder
    from clipsearch.ingest.scan import scan
    from clipsearch.model import Model
    from clipsearch.ocr.reader import TextReader

    cores = os.cpu_count() or 1
    model = Model.load(SPEED_MODEL, engine="onnx")  # exported once, before timing
    rows: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory() as work:
        photos = Path(work, "photos")
        photos.mkdir()
        make_photos(photos, small, seed, text_every=4)
        sets = [
            (f"{large} JPEGs 4000x3000 (index_throughput.py)", large_jpegs(large)),
            (f"{small} photos 512x512, a quarter with words", photos),
        ]
        for name, folder in sets:
            count = len(list(folder.iterdir()))
            rates = {}
            for read_text in (False, True):
                timer = Timer()
                options = IndexOptions(read_text=read_text, engine="onnx")
                index_dir = Path(work, f"index-{folder.name}-{read_text}")
                update_index([folder], index_dir, SPEED_MODEL, options, timer)
                rates[read_text] = timer.steady_rate()
            # CPU a decode worker spends on one file, without and with reading (one thread,
            # as in the workers), on a sample that keeps the set's share of text.
            entries = list(scan([folder]))[:: max(1, count // 48)]
            cpu = {}
            for read_text in (False, True):
                reader = TextReader(threads=1) if read_text else None
                decoder = _Decoder(model.preprocess, model.image_size, DEFAULT_MAX_PIXELS, reader)
                decoder(entries[:2])  # warm-up: the reader loads its models
                begin = time.process_time()
                decoder(entries)
                cpu[read_text] = (time.process_time() - begin) / len(entries)
            _, model_cpu = ceiling(model, 128, 32)
            best = cores / (model_cpu + cpu[True])  # no run that reads can go faster
            rows.append(
                {
                    "set": name,
                    "index_images_per_s": round(rates[False], 2),
                    "index_ocr_images_per_s": round(rates[True], 2),
                    "ratio_ocr_over_plain": round(rates[True] / rates[False], 3),
                    "model_cpu_ms_per_image": round(model_cpu * 1000, 1),
                    "decode_cpu_ms_per_image": round(cpu[False] * 1000, 1),
                    "decode_and_read_cpu_ms_per_image": round(cpu[True] * 1000, 1),
                    "ceiling_ocr_images_per_s": round(best, 2),
                    "ceiling_over_plain": round(best / rates[False], 3),
                    "ocr_run_over_its_ceiling": round(rates[True] / best, 3),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--texts", type=int, default=0, help="word search over this many")
    parser.add_argument("--speed", action="store_true", help="indexing with and without reading")
    parser.add_argument("--large", type=int, default=200, help="--speed: 12-MP JPEGs")
    parser.add_argument("--small", type=int, default=1000, help="--speed: 512-px photos")
    args = parser.parse_args()
    if args.speed:
        print(json.dumps(speed(args.large, args.small, args.seed), indent=2))
        return
    if args.texts:
        print(json.dumps(search_at_scale(args.texts, args.seed), indent=2))
        return
    if not SHARED.is_file():
        sys.exit(f"needs {SHARED} (../shared beside the checkout)")
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work, "photos")
        folder.mkdir()
        truth = make_photos(folder, args.photos, args.seed)
        labels = sorted({p.name.split("-")[0] for p in folder.iterdir()})
        report: dict[str, dict] = {}
        for read_text in (True, False):
            index_dir = Path(work, f"index-{read_text}")
            start = time.perf_counter()
            update_index([folder], index_dir, MODEL, IndexOptions(read_text=read_text))
            seconds = time.perf_counter() - start
            ranks, textless_above = word_ranks(index_dir, truth)
            large = [w for w, (_, height) in truth.items() if height >= 20]
            report["ocr" if read_text else "no ocr"] = {
                "images_per_s": round(args.photos / seconds, 2),
                "seconds": round(seconds, 1),
                "top5_all": round(sum(r is not None for r in ranks.values()) / len(ranks), 3),
                "top5_20px_up": round(sum(ranks[w] is not None for w in large) / len(large), 3),
                "first": round(sum(r == 1 for r in ranks.values()) / len(ranks), 3),
                "photos_without_text_above_a_found_one": textless_above,
                "precision_at_10": round(precision_at_10(index_dir, labels), 3),
                "missed": sorted(w for w, r in ranks.items() if r is None)[:20],
            }
        print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
