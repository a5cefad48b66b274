"""The evaluation metrics on hand-made embeddings whose answers are known."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from clipsearch.train.config import SourceConfig
from clipsearch.train.evaluate import embed_source, query_precision, retrieval, zero_shot
from clipsearch.train.sources import load_source


def unit(rows: list[list[float]]) -> np.ndarray:
    x = np.array(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_zero_shot_top1_and_top5():
    weights = np.eye(6, dtype=np.float32)  # 6 classes, one axis each
    images = unit([[1, 0.5, 0, 0, 0, 0], [0.2, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0.3, 1]])
    labels = np.array([0, 0, 4])  # right, second choice, second choice
    metrics, predicted = zero_shot(images, labels, weights)
    assert predicted.tolist() == [0, 1, 5]
    assert metrics["zeroshot_top1"] == pytest.approx(100 / 3)
    assert metrics["zeroshot_top5"] == pytest.approx(100.0)


def test_retrieval_counts_any_caption_of_an_image():
    images = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    # captions 0,1 describe image 0; caption 2 image 1; caption 3 image 2 but points at image 1
    texts = unit([[1, 0.1, 0], [0.9, 0, 0.2], [0, 1, 0], [0, 1, 0.5]])
    metrics, best = retrieval(images, texts, np.array([0, 0, 1, 2]), ks=(1, 2))
    assert metrics["text_to_image_r1"] == pytest.approx(75.0)  # caption 3 misses at 1 ...
    assert metrics["text_to_image_r2"] == pytest.approx(100.0)  # ... and finds it at 2
    assert best.tolist() == [0, 2, 3]
    assert metrics["image_to_text_r1"] == pytest.approx(100.0)


def test_query_precision_is_the_share_of_the_right_class_in_the_top_k():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)  # 30 images, 10 per class
    centres = np.eye(3, 8, dtype=np.float32)
    images = unit((centres[labels] + 0.05 * rng.standard_normal((30, 8))).tolist())
    queries = unit([centres[1].tolist(), centres[2].tolist()])
    exact = query_precision(images, labels, queries, np.array([1, 2]), k=10)
    np.testing.assert_allclose(exact, [1.0, 1.0])
    # wrong target: none right; 20 nearest of a class of 10: at most half right
    wrong = query_precision(images, labels, queries, np.array([1, 0]), k=10)
    np.testing.assert_allclose(wrong, [1.0, 0.0])
    wide = query_precision(images, labels, queries[:1], np.array([1]), k=20)
    np.testing.assert_allclose(wide, [0.5])


def test_flip_averages_an_image_with_its_mirror(tmp_path):
    # Two PNGs, the second the mirror image of the first; a fixed random projection as model.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    blobs = []
    for array in (pixels, pixels[:, ::-1]):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    pq.write_table(pa.table({"image": blobs, "label_name": ["a", "b"]}), tmp_path / "m.parquet")
    source = load_source(SourceConfig(path=str(tmp_path / "m.parquet")))
    projection = torch.from_numpy(rng.standard_normal((8 * 8 * 3, 16)).astype(np.float32))

    def to_tensor(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255

    def embed(batch: torch.Tensor) -> np.ndarray:
        return (batch.flatten(1) @ projection).numpy()

    plain = embed_source(source, to_tensor, embed, batch_size=2, workers=0)
    assert plain[0] @ plain[1] < 0.9  # the projection tells the two apart ...
    both = embed_source(source, to_tensor, embed, batch_size=2, workers=0, flip=True)
    np.testing.assert_allclose(both[0], both[1], atol=1e-5)  # ... the flip average does not
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)


def test_shift_views_are_the_image_moved_each_way_with_reflected_borders():
    from clipsearch.errors import ClipsearchError
    from clipsearch.train.evaluate import _shifted

    batch = torch.arange(16.0).view(1, 1, 4, 4)
    down_right, up_left = _shifted(batch, 1)
    # moved down-right by one: row/column 0 is the reflection of row/column 1
    np.testing.assert_array_equal(down_right[0, 0, 1:, 1:], batch[0, 0, :3, :3])
    assert down_right[0, 0, 0, 0] == batch[0, 0, 1, 1]
    np.testing.assert_array_equal(up_left[0, 0, :3, :3], batch[0, 0, 1:, 1:])
    assert up_left[0, 0, 3, 3] == batch[0, 0, 2, 2]
    with pytest.raises(ClipsearchError, match="less than the 4x4"):
        _shifted(batch, 4)


def test_shift_averages_over_moved_copies(tmp_path):
    # A model that only sees the top-left pixel: the shifted views change what it sees, so the
    # shift average differs from the plain embedding and equals the mean of the three views.
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    pq.write_table(pa.table({"image": [buf.getvalue()], "label_name": ["a"]}), tmp_path / "s.pq")
    source = load_source(SourceConfig(path=str(tmp_path / "s.pq"), format="parquet"))

    def to_tensor(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255

    def corner(batch: torch.Tensor) -> np.ndarray:
        return (batch[:, :, 0, 0] + 0.1).numpy()

    plain = embed_source(source, to_tensor, corner, batch_size=1, workers=0)
    shifted = embed_source(source, to_tensor, corner, batch_size=1, workers=0, shift=1)
    image = to_tensor(Image.fromarray(pixels))
    views = [image[:, 0, 0], image[:, 1, 1], image[:, 1, 1]]  # itself, down-right, up-left
    unit_views = [(v.numpy() + 0.1) / np.linalg.norm(v.numpy() + 0.1) for v in views]
    expected = sum(unit_views) / np.linalg.norm(sum(unit_views))
    np.testing.assert_allclose(shifted[0], expected, atol=1e-5)
    assert abs(float(plain[0] @ shifted[0])) < 1 - 1e-4
