"""open_clip architecture configs shipped with clipsearch (one JSON file per architecture).

``register()`` adds them to open_clip's registry, so ``random:clipsearch-tiny`` and the
training recipes can name them like any built-in architecture, and registers the image towers
of ``convnet.py`` with timm (``clipsearch-convnet`` names one by ``timm_model_name``).
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent
_registered = False


def names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def register() -> None:
    """Make the shipped configs known to open_clip (idempotent)."""
    global _registered
    if _registered:
        return
    import open_clip

    from clipsearch.model.architectures.convnet import register_with_timm

    register_with_timm()
    open_clip.add_model_config(CONFIG_DIR)
    _registered = True
