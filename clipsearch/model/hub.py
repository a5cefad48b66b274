"""Reaching the Hugging Face hub: use the cache when the hub is unreachable, and fail fast.

Offline, huggingface_hub retries a failed download five times with backoff (about 45 s here)
before giving up. We probe the endpoint once instead and, when it does not answer, switch the
hub client to offline mode so cached files still load and missing ones fail at once.

Even sooner: which hub files a spec needs is known from the spec alone (``needed_files``),
so ``fail_fast_when_unavailable`` checks the cache and the hub before torch and open_clip
are imported (seconds), and an offline machine hears at once that weights are missing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

from clipsearch.errors import ClipsearchError
from clipsearch.model.spec import ModelSpec

_TRUE = {"1", "true", "yes", "on"}
OFFLINE_FIX = (
    "name a local checkpoint directory as the model (or in CLIPSEARCH_MODEL), such as one "
    "written by `clipsearch train`, or connect once so the weights are cached"
)
# The files open_clip downloads from a hub repository (open_clip.constants).
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"
OPEN_CLIP_SAFE_WEIGHTS = "open_clip_model.safetensors"


def endpoint_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or ""


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the hub's host resolves and accepts a TCP connection within ``timeout``."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return False
    try:
        with socket.create_connection((endpoint_host(), 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def hub_access() -> Iterator[bool]:
    """Yield whether the hub is online; while offline, serve downloads from the cache only."""
    online = hub_reachable()
    if online:
        yield True
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield False
    finally:
        constants.HF_HUB_OFFLINE = previous


def offline_error(spec: ModelSpec, source: str, cache_dir: str | None) -> ClipsearchError:
    """The one line for weights that are neither in the cache nor downloadable."""
    cache = cache_dir or "the Hugging Face cache"
    return ClipsearchError(
        f"cannot load model '{spec}': tried {source} in {cache}, not there, and "
        f"{endpoint_host()} cannot be reached (offline). Fix: {OFFLINE_FIX}",
        parameter="model",
    )


@dataclass(frozen=True)
class HubFiles:
    """What loading a spec downloads from one hub repository."""

    repo: str  # "org/name"
    source: str  # how errors name it, as the loader does
    needed: tuple[tuple[str, ...], ...]  # per file, its names in the order open_clip tries

    def cached(self, cache_dir: str | None) -> bool:
        """Whether every needed file is in the local cache (``cache_dir``, else the hub's)."""
        from huggingface_hub import try_to_load_from_cache

        return all(
            any(
                isinstance(try_to_load_from_cache(self.repo, name, cache_dir=cache_dir), str)
                for name in names
            )
            for names in self.needed
        )


def needed_files(spec: ModelSpec) -> HubFiles | None:
    """The hub files that loading ``spec`` downloads, known without importing open_clip;
    None when it downloads none, or when only open_clip knows (then its loader finds out)."""
    if spec.kind == "hf-hub" and spec.repo:
        weights = _weights_names("")
        return HubFiles(spec.repo, f"hf-hub {spec.repo}", ((OPEN_CLIP_CONFIG,), weights))
    if spec.kind == "pretrained" and spec.arch and spec.tag and not os.path.isfile(spec.tag):
        from clipsearch.model.pretrained_table import hub_location

        location = hub_location(spec.arch, spec.tag)
        if location is None:
            return None  # an unknown tag, or weights at a URL: the loader says which
        repo, _, filename = location.rpartition("/")  # "org/repo/" or "org/repo/file.bin"
        return HubFiles(repo, location, (_weights_names(filename),)) if repo else None
    return None


def _weights_names(filename: str) -> tuple[str, ...]:
    """The weights file names open_clip tries, safetensors first
    (``open_clip.pretrained.download_pretrained_from_hf``)."""
    filename = filename or OPEN_CLIP_WEIGHTS
    if filename == OPEN_CLIP_WEIGHTS:
        return (OPEN_CLIP_SAFE_WEIGHTS, filename)
    if filename.endswith((".bin", ".pth")):
        return (filename[:-4] + ".safetensors", filename)
    return (filename,)


def fail_fast_when_unavailable(spec: ModelSpec, cache_dir: str | None) -> None:
    """Raise the offline error now when ``spec`` needs hub files that are not cached while
    the hub cannot be reached; otherwise return, and the loader downloads or reads them."""
    files = needed_files(spec)
    if files is None:
        return
    try:
        if files.cached(cache_dir):
            return
    except ImportError:  # no huggingface_hub: open_clip's loader says so
        return
    if not hub_reachable():
        raise offline_error(spec, files.source, cache_dir)
