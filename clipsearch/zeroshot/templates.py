"""Zero-shot classification: prompt templates and classifier weights from text embeddings.

Shared by training (evaluation, captions for class-labelled data) and inference
(``clipsearch classify``): ``classifier_weights`` only needs a function that embeds texts,
so it works with a training module as well as with ``clipsearch.Model.embed_texts``.
Templates are format strings with one ``{}`` (``{label}`` is accepted too).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from clipsearch.errors import ClipsearchError

TEMPLATES_FILE = Path(__file__).with_name("prompt_templates.json")


def label_of_folder(name: str) -> str:
    """The class a folder of labelled images names: ``sea_turtle`` → ``sea turtle``. One rule
    for training (``data.format = folder``) and scoring a labelled folder."""
    return name.replace("_", " ")


# "a photo of a {}." and close variants: captions for training on class-labelled images.
PHOTO_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a cropped photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a good photo of a {}.",
    "a {}.",
)


def template_names() -> list[str]:
    return ["default", "simple", "photo"]


def get_templates(name_or_list: str | Sequence[str]) -> list[str]:
    """A template set by name (default: OpenAI's 80 ImageNet prompts; simple: 7; photo: 12),
    or a list of format strings as given."""
    if not isinstance(name_or_list, str):
        templates = [t.replace("{label}", "{}") for t in name_or_list]
        bad = [t for t in templates if t.count("{}") != 1]
        if not templates or bad:
            raise ClipsearchError(
                f"templates must each contain one {{}} (or {{label}}): {bad}", parameter="templates"
            )
        return templates
    if name_or_list == "photo":
        return list(PHOTO_TEMPLATES)
    if name_or_list in ("default", "simple"):
        return list(_imagenet_templates()[name_or_list])
    raise ClipsearchError(
        f"unknown template set {name_or_list!r}: use {', '.join(template_names())} "
        "or a list of strings with {}",
        parameter="templates",
    )


@functools.cache
def _imagenet_templates() -> dict[str, list[str]]:
    """CLIP's 80 ImageNet prompts and open_clip's 7 simple ones, stored as data so that
    classifying needs no open_clip (tests/test_onnx_engine.py checks they equal its lists)."""
    return json.loads(TEMPLATES_FILE.read_text(encoding="utf-8"))


def prompts(label: str, templates: Sequence[str]) -> list[str]:
    return [t.format(label) for t in templates]


def classifier_weights(
    embed_texts: Callable[[list[str]], np.ndarray],
    labels: Sequence[str],
    templates: Sequence[str],
) -> np.ndarray:
    """One unit vector per label: the mean of its prompts' normalized embeddings, renormalized.

    Returns float32 of shape (len(labels), dim); cosine with a normalized image embedding
    is that label's score (prompt ensembling, as in CLIP).
    """
    if not labels:
        raise ClipsearchError("zero-shot classification needs at least one label")
    all_prompts = [p for label in labels for p in prompts(label, templates)]
    emb = np.asarray(embed_texts(all_prompts), dtype=np.float32)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
    mean = emb.reshape(len(labels), len(templates), -1).mean(axis=1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(min=1e-12)
