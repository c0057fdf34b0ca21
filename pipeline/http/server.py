"""Runs the app on uvicorn for `tts-pipeline http`: binds the socket itself, prints its address, stops cleanly.

Binding here (not in uvicorn) means `--port 0` works and the printed address is the real
one: the line `listening on http://HOST:PORT` is written once the socket accepts
connections, and `ready: ...` once the pipeline is up (/readyz says 503 until then).
SIGINT and SIGTERM stop it gracefully: open streams get GRACE_S to finish, then are
cancelled; the pipeline and its stage processes stop with the app's lifespan.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Callable

GRACE_S = 2  # seconds open streams get to finish on shutdown before they are cancelled
BACKLOG = 2048  # pending connections the kernel queues (uvicorn's default)


class _Stop(Exception):
    """A SIGINT or SIGTERM that uvicorn re-raised after its graceful shutdown."""


def bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _QuietAbort(logging.Filter):
    """uvicorn logs a traceback for every exception an app raises; a stream we abort on purpose gets one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pipeline.http.responses import StreamAborted

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, StreamAborted):
            logging.getLogger("tts.http").warning("stream aborted: %s", exc)
            return False
        return True


def serve(backend, host: str, port: int, settings, say: Callable[[str], None]) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 1 when the pipeline could not start."""
    import uvicorn

    from pipeline.http.app import create_app

    sock = bind(host, port)
    fatal = threading.Event()
    server: uvicorn.Server | None = None

    def on_fatal() -> None:
        fatal.set()
        server.should_exit = True

    def stop(signum, frame):
        raise _Stop()

    app = create_app(backend, settings, announce=say, on_fatal=on_fatal)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws_max_size=settings.max_body_bytes,
                            timeout_graceful_shutdown=GRACE_S)
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.error").addFilter(_QuietAbort())
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        say(f"listening on {url_of(sock)}")
        server.run(sockets=[sock])
    except _Stop:
        pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
        backend.close()  # idempotent; covers a signal that came before uvicorn's lifespan ran
    return 1 if fatal.is_set() else 0
