"""Reaching the Hugging Face hub: use the cache when the hub is unreachable, and fail fast.

Offline, huggingface_hub retries a failed download five times with backoff (about 45 s here)
before giving up. We probe the endpoint once instead and, when it does not answer, switch the
hub client to offline mode so cached files still load and missing ones fail at once.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}


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
