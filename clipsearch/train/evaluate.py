"""Evaluation: zero-shot classification on labelled images, retrieval on captioned images.

Works on anything that embeds: ``embed_pixels`` (a preprocessed batch -> normalized rows)
and ``embed_texts`` (strings -> rows), so it serves both a model being trained and an
inference ``clipsearch.Model``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clipsearch.errors import ClipsearchError
from clipsearch.train.data import eval_loader
from clipsearch.train.sources import Source
from clipsearch.zeroshot.accuracy import score
from clipsearch.zeroshot.templates import classifier_weights

if TYPE_CHECKING:
    from clipsearch.model.torch_engine import ClipModule

EmbedPixels = Callable[[torch.Tensor], np.ndarray]
EmbedTexts = Callable[[list[str]], np.ndarray]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    # A few examples for the predictions grid: (image index, truth, prediction).
    examples: list[tuple[int, str, str]] = field(default_factory=list)
    # Precision@k (in %) of each free-text query, in the order given (see query_precision).
    query_precision: list[float] = field(default_factory=list)


def embed_source(
    source: Source,
    preprocess: Callable,
    embed_pixels: EmbedPixels,
    batch_size: int,
    workers: int,
    flip: bool = False,
    shift: int = 0,
) -> np.ndarray:
    """Normalized embeddings of every image, optionally averaged over test-time views: with
    ``flip`` its mirror image, with ``shift`` copies moved by ``shift`` px down-right and
    up-left (each mirrored too with ``flip``). The model was trained on such views; the views
    cost one model pass each."""
    loader = eval_loader(source, preprocess, batch_size, workers)
    chunks = []
    for pixels, _ in loader:
        views = [pixels, *_shifted(pixels, shift)] if shift else [pixels]
        if flip:
            views += [view.flip(-1) for view in views]
        emb = sum(_normalized(embed_pixels(view)) for view in views)
        chunks.append(emb)
    return _normalized(np.concatenate(chunks))


def _shifted(pixels: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """The batch moved by ``shift`` px along both axes, each way (reflect-padded, as the
    training translation)."""
    height, width = pixels.shape[-2:]
    if shift >= min(height, width):
        raise ClipsearchError(f"shift {shift} px: use less than the {height}x{width} image size")
    padded = torch.nn.functional.pad(pixels, (shift,) * 4, mode="reflect")
    far = 2 * shift
    return [padded[..., :height, :width], padded[..., far : far + height, far : far + width]]


def zero_shot(
    image_emb: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> tuple[dict[str, float], np.ndarray]:
    """Top-1/top-5 accuracy (in %) and the top-1 predicted class per image."""
    scores = image_emb @ weights.T
    k = min(5, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    top1 = score(labels, top[:, 0], [str(i) for i in range(scores.shape[1])]).accuracy
    return {
        "zeroshot_top1": top1 * 100,
        "zeroshot_top5": float((top == labels[:, None]).any(axis=1).mean() * 100),
    }, top[:, 0]


def retrieval(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    text_image: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> tuple[dict[str, float], np.ndarray]:
    """Recall@k (in %) both ways. ``text_image[t]`` is the image that caption t describes;
    an image is found when any of its captions ranks in the top k. Also returns each
    image's best caption."""
    sims = image_emb @ text_emb.T  # (images, texts)
    metrics: dict[str, float] = {}
    text_rank = np.argsort(-sims.T, axis=1)  # texts -> images
    image_rank = np.argsort(-sims, axis=1)  # images -> texts
    own = text_image[image_rank] == np.arange(len(image_emb))[:, None]
    for k in ks:
        metrics[f"text_to_image_r{k}"] = float(
            (text_rank[:, :k] == text_image[:, None]).any(axis=1).mean() * 100
        )
        metrics[f"image_to_text_r{k}"] = float(own[:, :k].any(axis=1).mean() * 100)
    return metrics, image_rank[:, 0]


def query_precision(
    image_emb: np.ndarray, labels: np.ndarray, query_emb: np.ndarray, targets: np.ndarray, k: int
) -> np.ndarray:
    """Per query: the share of its ``k`` nearest images whose label is the query's target
    class (how well words never seen in training find the right pictures)."""
    k = min(k, len(image_emb))
    top = np.argpartition(-(query_emb @ image_emb.T), k - 1, axis=1)[:, :k]
    return (labels[top] == targets[:, None]).mean(axis=1)


def evaluate(
    source: Source,
    preprocess: Callable,
    embed_pixels: EmbedPixels,
    embed_texts: EmbedTexts,
    templates: Sequence[str],
    batch_size: int = 256,
    workers: int = 0,
    examples: int = 16,
    queries: Sequence[tuple[str, str]] = (),
    k: int = 20,
    flip: bool = False,
    shift: int = 0,
) -> EvalResult:
    """Zero-shot metrics when the source has labels, retrieval when it has captions;
    precision@k of ``queries`` ((text, class name) pairs) on a labelled source."""
    image_emb = embed_source(source, preprocess, embed_pixels, batch_size, workers, flip, shift)
    result = EvalResult({"eval_images": float(len(source))})
    shown = _spread(len(source), examples)
    if source.labels is not None and source.classes:
        weights = classifier_weights(embed_texts, source.classes, templates)
        metrics, predicted = zero_shot(image_emb, source.labels, weights)
        result.metrics.update(metrics)
        result.examples = [
            (i, source.classes[source.labels[i]], source.classes[predicted[i]]) for i in shown
        ]
        if queries:
            targets = np.array([source.classes.index(label) for _, label in queries])
            query_emb = _normalized(embed_texts([text for text, _ in queries]))
            precision = query_precision(image_emb, source.labels, query_emb, targets, k)
            result.query_precision = [float(p * 100) for p in precision]
            result.metrics[f"query_precision_at_{k}"] = float(precision.mean() * 100)
    if source.captions is not None:
        texts = [c for caps in source.captions for c in caps]
        text_image = np.repeat(np.arange(len(source)), [len(c) for c in source.captions])
        text_emb = _normalized(embed_texts(texts))
        metrics, best = retrieval(image_emb, text_emb, text_image)
        result.metrics.update(metrics)
        if not result.examples:
            result.examples = [(i, source.captions[i][0], texts[best[i]]) for i in shown]
    return result


def module_embedders(
    module: ClipModule,
    tokenizer: Any,
    device: torch.device,
    autocast: Callable,
    batch_size: int = 256,
) -> tuple[EmbedPixels, EmbedTexts]:
    """Embedding functions over a training module (call with the module in eval mode)."""

    def embed_pixels(pixels: torch.Tensor) -> np.ndarray:
        with torch.no_grad(), autocast():
            return module.encode_image(pixels.to(device), normalize=True).float().cpu().numpy()

    def embed_batch(texts: list[str]) -> np.ndarray:
        with torch.no_grad(), autocast():
            tokens = tokenizer(texts).to(device)
            return module.encode_text(tokens, normalize=True).float().cpu().numpy()

    def embed_texts(texts: list[str]) -> np.ndarray:
        return np.concatenate(
            [embed_batch(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        )

    return embed_pixels, embed_texts


def _normalized(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


def _spread(n: int, count: int) -> list[int]:
    """``count`` indices spread over ``range(n)`` (the first rows are often one class)."""
    if n == 0 or count <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, count)).round()})
