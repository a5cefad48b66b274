"""The evaluation metrics on hand-made embeddings whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.train.evaluate import query_precision, retrieval, zero_shot


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
