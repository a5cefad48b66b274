"""Run the app with uvicorn: bind, announce in ``INDEX/server.json``, serve, clean up."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from clipsearch.errors import ClipsearchError
from clipsearch.server.config import ServerConfig
from clipsearch.server.discovery import new_info, remove_info, write_info
from clipsearch.store.layout import IDLE_SERVER_LOCK

logger = logging.getLogger("clipsearch.server")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one), not listening yet."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ClipsearchError(f"cannot serve on {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ClipsearchError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    return sock


def url_for(host: str, port: int) -> str:
    """The URL a client on this machine uses to reach a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _stop_on_sigterm() -> None:
    """Make SIGTERM unwind the stack like Ctrl-C, so ``server.json`` is removed.

    uvicorn shuts down gracefully on SIGTERM and then re-raises it to the handler that was
    there before: the default one would kill the process before our clean-up runs.
    """

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def limit_threads(threads: int) -> None:
    """CPU threads per query for BLAS, torch, ONNX Runtime and FAISS (process-wide: the
    server only; torch and ONNX Runtime read OMP_NUM_THREADS when they start).

    Call it before numpy is imported: OpenBLAS reads its thread count once, when it loads.
    Many concurrent queries each running a many-threaded matmul made the server spend twice
    the CPU per query (spinning BLAS threads) at 8 clients on 2 cores.
    """
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[name] = str(threads)
    import faiss

    faiss.omp_set_num_threads(threads)


def serve(
    config: ServerConfig,
    host: str,
    port: int,
    log_level: str = "info",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Load and warm the index, then serve until interrupted (Ctrl-C, SIGTERM)."""
    idle_lock = _only_idle_server(config.index_dir) if config.idle_exit else None
    if config.idle_exit and idle_lock is None:
        return  # another background server already answers for this index
    limit_threads(config.threads)
    _stop_on_sigterm()
    import uvicorn

    from clipsearch.server.app import create_app

    sock = bind(host, port)  # a port in use fails now, not after loading the model
    try:
        app = create_app(config)
    except BaseException:
        sock.close()
        raise
    sock.listen(128)  # from here connections wait in the backlog until uvicorn serves
    url = url_for(host, sock.getsockname()[1])
    info = new_info(url, config.index_dir, config.token if config.require_token else None)
    try:
        write_info(config.index_dir, info)
    except OSError as exc:  # a read-only index still serves; query just won't find it
        logger.warning("cannot write %s/server.json: %s", config.index_dir, exc)
    (announce or (lambda line: print(line, file=sys.stderr, flush=True)))(url)
    clock = _ActivityClock(app)
    server = uvicorn.Server(
        uvicorn.Config(clock, log_level=log_level, timeout_graceful_shutdown=5, server_header=False)
    )
    if config.idle_exit:
        _exit_when_idle(server, clock, config.idle_exit)
    try:
        server.run(sockets=[sock])
    finally:
        remove_info(config.index_dir, info)
        sock.close()
        if idle_lock is not None:
            idle_lock.close()


class _ActivityClock:
    """ASGI wrapper that remembers when the last request started and ended."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = time.monotonic()
        self.active = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.active += 1
        self.last = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.last = time.monotonic()


def _exit_when_idle(server: Any, clock: _ActivityClock, seconds: float) -> None:
    """Ask uvicorn to stop once no request came for ``seconds``."""

    def watch() -> None:
        while not server.should_exit:
            idle = time.monotonic() - clock.last
            if clock.active == 0 and idle >= seconds:
                logger.info("no request for %.0f s: stopping", idle)
                server.should_exit = True
                return
            time.sleep(min(1.0, max(0.05, seconds - idle)))

    threading.Thread(target=watch, name="idle-exit", daemon=True).start()


def _only_idle_server(index_dir: Any) -> Any:
    """Hold ``INDEX/.idle-server.lock`` for this process's life, or None when another
    background server holds it. The kernel drops the lock when the process dies."""
    import fcntl

    from clipsearch.base.access import open_owner_only

    try:
        lock = open_owner_only(index_dir / IDLE_SERVER_LOCK)  # held until exit
    except OSError:
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock
