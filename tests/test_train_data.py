"""Training data: every loader on files the test writes, plus the real shared datasets."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from clipsearch.errors import ClipsearchError
from clipsearch.train.config import SourceConfig
from clipsearch.train.data import PairDataset, StepSampler, train_transform
from clipsearch.train.sources import caption_key, load_source

from .training_data import CLASSES, color_image, png_bytes, write_class_parquet

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def write_image_files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.jpg"
        color_image(CLASSES[i % 3], i).save(path)
        paths.append(path)
    return paths


def test_parquet_bytes_with_class_labels(tmp_path):
    write_class_parquet(tmp_path / "train-0.parquet", 6)
    write_class_parquet(tmp_path / "train-1.parquet", 3)
    source = load_source(
        SourceConfig(path=str(tmp_path / "train-*.parquet"), label_column="label_name")
    )
    assert len(source) == 9
    assert source.captions is None and source.classes == sorted(CLASSES)
    assert [source.classes[k] for k in source.labels[:3]] == ["red", "green", "blue"]
    image = source.image(1)
    assert image.mode == "RGB" and image.size == (20, 20)
    assert np.asarray(image)[..., 1].mean() > 150  # green really is green


def test_integer_labels_need_class_names(tmp_path):
    path = write_class_parquet(tmp_path / "t.parquet", 3)
    with pytest.raises(ClipsearchError, match="integer labels need `classes`"):
        load_source(SourceConfig(path=str(path), label_column="label"))
    source = load_source(SourceConfig(path=str(path), label_column="label", classes=CLASSES))
    assert source.classes == CLASSES and source.labels.tolist() == [0, 1, 2]


def test_parquet_with_captions_table_joined_on_key_and_split(tmp_path):
    ids = [f"{i:03d}.jpg" for i in range(4)]
    images = pa.table(
        {
            "image_id": ids,
            "image": [png_bytes(color_image("red", i), "JPEG") for i in range(4)],
            "split": ["train", "train", "train", "val"],
        }
    )
    pq.write_table(images, tmp_path / "images-00000-of-00001.parquet")
    rows = [(k, f"caption {j} of {k}") for k in ids for j in range(3) if k != "002.jpg"]
    captions = pa.table({"image_id": [r[0] for r in rows], "caption": [r[1] for r in rows]})
    pq.write_table(captions, tmp_path / "captions.parquet")

    cfg = SourceConfig(
        path=str(tmp_path / "images-*.parquet"),
        captions=str(tmp_path / "captions.parquet"),
        split="train",
    )
    source = load_source(cfg)
    # 002 has no captions and 003 is val: two images left, three captions each
    assert len(source) == 2
    assert source.captions[1] == [f"caption {j} of 001.jpg" for j in range(3)]
    assert source.labels is None


def test_one_caption_per_image_sampled_per_epoch(tmp_path):
    ids = ["a", "b"]
    pq.write_table(
        pa.table({"image_id": ids, "image": [png_bytes(color_image("red", i)) for i in range(2)]}),
        tmp_path / "images.parquet",
    )
    rows = [(k, f"{k} caption {j}") for k in ids for j in range(5)]
    pq.write_table(
        pa.table({"image_id": [r[0] for r in rows], "caption": [r[1] for r in rows]}),
        tmp_path / "captions.parquet",
    )
    source = load_source(
        SourceConfig(
            path=str(tmp_path / "images.parquet"), captions=str(tmp_path / "captions.parquet")
        )
    )
    dataset = PairDataset(source, train_transform(16, MEAN, STD), ["{}"], seed=0)
    picks = [dataset[(epoch, 0)][1] for epoch in range(20)]
    assert set(picks) <= {f"a caption {j}" for j in range(5)}
    assert len(set(picks)) >= 3  # different epochs draw different captions
    assert dataset[(3, 0)][1] == picks[3]  # ... deterministically
    _, caption, key = dataset[(0, 1)]
    assert key == caption_key(caption)


def test_csv_tsv_jsonl_paths_relative_to_the_table(tmp_path):
    paths = write_image_files(tmp_path / "imgs", 3)
    (tmp_path / "pairs.csv").write_text(
        "filepath,title\n"
        + "".join(f"imgs/{p.name},a photo number {i}\n" for i, p in enumerate(paths))
        + f'imgs/{paths[0].name},"another caption, with a comma"\n'
    )
    (tmp_path / "pairs.tsv").write_text(
        "path\tcaption\n" + "".join(f"{p}\tcaption {i}\n" for i, p in enumerate(paths))
    )
    (tmp_path / "pairs.jsonl").write_text(
        "".join(
            json.dumps({"image": f"imgs/{p.name}", "text": f"t{i}"}) + "\n"
            for i, p in enumerate(paths)
        )
    )
    csv = load_source(SourceConfig(path=str(tmp_path / "pairs.csv")))
    # rows naming the same file are one image with both captions
    assert len(csv) == 3
    assert csv.captions[0] == ["a photo number 0", "another caption, with a comma"]
    assert csv.image(2).size == (20, 20)
    tsv = load_source(SourceConfig(path=str(tmp_path / "pairs.tsv")))
    assert tsv.captions == [["caption 0"], ["caption 1"], ["caption 2"]]
    jsonl = load_source(SourceConfig(path=str(tmp_path / "pairs.jsonl")))
    assert jsonl.captions[2] == ["t2"] and jsonl.image(1).mode == "RGB"


def test_class_folder_captions_from_templates(tmp_path):
    for name in ("golden_retriever", "tabby_cat"):
        write_image_files(tmp_path / "pets" / name, 2)
    (tmp_path / "pets" / "tabby_cat" / "notes.txt").write_text("not an image")
    source = load_source(SourceConfig(path=str(tmp_path / "pets")))
    assert source.classes == ["golden retriever", "tabby cat"]
    assert source.labels.tolist() == [0, 0, 1, 1]
    templates = ["a photo of a {}.", "a blurry photo of a {}."]
    dataset = PairDataset(source, train_transform(16, MEAN, STD), templates, seed=1)
    pixels, caption, key = dataset[(0, 3)]
    assert caption in ("a photo of a tabby cat.", "a blurry photo of a tabby cat.")
    assert key == 1  # class-labelled data: the class is the positive key
    assert pixels.shape == (3, 16, 16)


def test_webdataset_tar_shards(tmp_path):
    for s in range(2):
        with tarfile.open(tmp_path / f"shard-{s:03d}.tar", "w") as tar:
            for i in range(3):
                key = f"sample{s}{i}"
                members = {
                    f"{key}.png" if i % 2 else f"{key}.jpg": png_bytes(
                        color_image("blue", i), "PNG" if i % 2 else "JPEG"
                    ),
                    f"{key}.txt": f"  a blue square\nnumber {s}{i} ".encode(),
                }
                if i == 2:
                    del members[f"{key}.txt"]  # an image without caption is skipped
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    source = load_source(SourceConfig(path=str(tmp_path / "shard-{000..001}.tar")))
    assert len(source) == 4
    assert source.captions[3] == ["a blue square number 11"]
    image = source.image(3)
    assert image.size == (20, 20) and np.asarray(image)[..., 2].mean() > 150


def test_augmentation_is_seeded_by_epoch_and_index(tmp_path):
    source = load_source(
        SourceConfig(
            path=str(write_class_parquet(tmp_path / "t.parquet", 4)), label_column="label_name"
        )
    )
    dataset = PairDataset(source, train_transform(16, MEAN, STD, (0.3, 1.0)), ["{}"], seed=0)
    a, b = dataset[(0, 2)][0], dataset[(0, 2)][0]
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(a, dataset[(0, 2)][0]) and torch.equal(a, b)
    assert not torch.equal(a, dataset[(1, 2)][0])  # another epoch, another crop


def test_translate_shifts_without_resizing():
    # A 16-px ramp: a shift keeps every column's values (no resampling blur), moved by <= 3.
    ramp = np.tile(np.arange(0, 160, 10, dtype=np.uint8), (16, 1))
    image = Image.fromarray(np.stack([ramp] * 3, axis=-1))
    transform = train_transform(16, (0, 0, 0), (1, 1, 1), flip=False, translate=3)
    shifts = set()
    for seed in range(40):
        torch.manual_seed(seed)
        row = (transform(image)[0, 8] * 255).round().int().tolist()
        assert set(row) <= set(range(0, 160, 10))
        inside = row[3:-3]
        shifts.add(inside[0] - 30)
        assert all(b - a == 10 for a, b in itertools.pairwise(inside))
    assert shifts == {-30, -20, -10, 0, 10, 20, 30}  # every shift of up to 3 px, both ways


def test_alternate_flip_mirrors_each_image_every_other_epoch(tmp_path):
    source = load_source(
        SourceConfig(
            path=str(write_class_parquet(tmp_path / "t.parquet", 12)), label_column="label_name"
        )
    )
    plain = PairDataset(source, train_transform(20, MEAN, STD, (1.0, 1.0), flip=False), ["{}"], 0)
    alternating = PairDataset(
        source, train_transform(20, MEAN, STD, (1.0, 1.0), flip=False), ["{}"], 0, True
    )
    first_sides = []
    for i in range(12):
        image = plain[(0, i)][0]
        views = [alternating[(epoch, i)][0] for epoch in range(4)]
        mirrored = [torch.equal(v, image.flip(-1)) for v in views]
        assert all(m or torch.equal(v, image) for m, v in zip(mirrored, views, strict=True))
        assert mirrored in ([False, True, False, True], [True, False, True, False])
        first_sides.append(mirrored[0])
    assert 0 < sum(first_sides) < 12  # which side comes first is drawn per image


def test_step_sampler_splits_each_global_batch_across_ranks():
    one = list(StepSampler(20, 8, seed=0, start_step=0, total_steps=5))
    ranks = [list(StepSampler(20, 8, 0, 0, 5, rank=r, world=2)) for r in range(2)]
    for step in range(5):
        assert one[step] == ranks[0][step] + ranks[1][step]
    # 2 steps per epoch (the last 4 samples dropped); epoch 1 is another permutation
    assert [e for e, _ in one[2]] == [1] * 8
    assert len({i for b in one[:2] for _, i in b}) == 16
    resumed = list(StepSampler(20, 8, 0, start_step=3, total_steps=5))
    assert resumed == one[3:]


def test_shared_cifar10_and_coco_mini(shared_data):
    cifar = load_source(
        SourceConfig(
            path=str(shared_data / "cifar10" / "test.parquet"), label_column="label_name", limit=20
        )
    )
    assert len(cifar) == 20 and len(cifar.classes) == 10
    assert cifar.classes[cifar.labels[0]] == "airplane"  # row r has label r % 10
    assert cifar.image(0).size == (32, 32)
    coco = shared_data / "coco_mini"
    val = load_source(
        SourceConfig(
            path=str(coco / "images-*.parquet"),
            captions=str(coco / "captions.parquet"),
            split="val",
        )
    )
    assert len(val) == 51 and all(len(c) == 5 for c in val.captions)


def test_class_folders_name_the_same_classes_for_training_and_scoring(tmp_path):
    from clipsearch.zeroshot.accuracy import class_folders, true_label

    for folder in ("sea_turtle", "cat"):
        path = tmp_path / folder / "1.png"
        path.parent.mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(path, format="PNG")
    (tmp_path / "cat" / "2.jfif").write_bytes((tmp_path / "cat" / "1.png").read_bytes())
    source = load_source(SourceConfig(path=str(tmp_path), format="folder"))
    assert source.classes == class_folders(tmp_path) == ["cat", "sea turtle"]
    assert len(source.labels) == 3  # .jfif is an image to training as to indexing
    assert true_label(str(tmp_path / "sea_turtle" / "1.png"), tmp_path) == "sea turtle"
