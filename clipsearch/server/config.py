"""What a server is allowed to do: its index, limits and the few switches that relax them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from clipsearch.server.auth import new_token
from clipsearch.store.layout import THUMBNAILS_DIR

MIB = 1 << 20
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD = 20 * MIB
# Below the indexer's 100 MP: a server decodes uploads from anyone who can reach it.
DEFAULT_MAX_UPLOAD_PIXELS = 50_000_000
DEFAULT_THUMBNAIL_CACHE = 256 * MIB
MAX_K = 1000
THUMBNAIL_SIZES = (256, 1024)  # a fixed set, so the cache cannot be filled with variants
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small text fields beside a file
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerConfig:
    """Options of one server; the defaults are the safe ones."""

    index_dir: Path
    model: str | None = None  # must be the index's model; None: the one it was built with
    device: str = "auto"
    cache_dir: str | None = None
    engine: str = "auto"
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS
    thumbnail_cache_bytes: int = DEFAULT_THUMBNAIL_CACHE
    thumbnail_dir: Path | None = None  # default: INDEX/thumbnails
    follow_symlinks: bool = False  # serve indexed files that are symbolic links
    cors_origins: tuple[str, ...] = ()  # none: browsers refuse cross-origin reads
    # Host header values accepted (DNS rebinding defence); "*" accepts any.
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    text_collections: tuple[Path, ...] = ()  # besides those next to the index
    warm_up: bool = True  # load the model and run one query before serving
    # CPU threads per query (torch, FAISS, DuckDB). Concurrent queries run side by side,
    # so one each keeps them from fighting over cores (on busy cores more threads made a
    # tiny text query many times slower: benchmarks/RESULTS.md, serve load).
    threads: int = 1
    # Exit after this many seconds without a request (0: never). A server started this way
    # is the one background server of its index (clipsearch query starts it to stay warm).
    idle_exit: float = 0.0
    # The secret every request must carry (server.auth); a new random one unless given.
    token: str = field(default_factory=new_token, repr=False)
    # False only when asked for by name (serve --no-auth): anyone who reaches the port is in.
    require_token: bool = True

    @property
    def thumbnails(self) -> Path:
        return self.thumbnail_dir or self.index_dir / THUMBNAILS_DIR

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + FORM_OVERHEAD


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Host header values to accept when bound to ``host``.

    On loopback only loopback names: a web page whose DNS name is rebound to 127.0.0.1
    then cannot read the API. Bound to all interfaces (0.0.0.0, ::) the machine's names
    are unknown, so any Host is accepted unless ``extra`` names them.
    """
    if extra:
        return tuple(dict.fromkeys([*LOOPBACK_NAMES, *extra]))
    if is_loopback(host):
        return LOOPBACK_NAMES
    if host in ("0.0.0.0", "::", ""):
        return ("*",)
    return tuple(dict.fromkeys([*LOOPBACK_NAMES, host]))
