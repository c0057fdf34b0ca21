"""The socket factory: every ZeroMQ socket is made here, with its high-water mark, linger and bind/connect side.

Bind or connect is decided in one table (`BINDS`): the side that lives longest and that
several peers reach binds. PUSH/PULL are bounded so that a slow stage applies
backpressure (its upstream blocks in send) instead of growing memory.
"""
from __future__ import annotations

from typing import Any

import zmq

from ipc.endpoints import Endpoints

# High-water marks, in messages.
HWM_PIPELINE = 64  # PUSH/PULL between stages: ~64 chunks in flight per link, then the sender blocks
HWM_PUB = 100_000  # PUB to subscribers: a slow subscriber is dropped from, never slows, synthesis
HWM_CONTROL = 1_000  # ROUTER/DEALER request sockets: requests are small and rare
LINGER_MS = 200  # on close, give queued messages 200 ms to reach a live peer; close never hangs longer

# XPUB is a PUB that also reports subscriptions (the coordinator's slow-joiner handshake).
KINDS = {"PUSH": zmq.PUSH, "PULL": zmq.PULL, "PUB": zmq.PUB, "XPUB": zmq.XPUB, "SUB": zmq.SUB,
         "ROUTER": zmq.ROUTER, "DEALER": zmq.DEALER}
BINDS = {"PULL": True, "PUSH": False, "PUB": True, "XPUB": True, "SUB": False, "ROUTER": True, "DEALER": False}
HWMS = {"PUSH": HWM_PIPELINE, "PULL": HWM_PIPELINE, "PUB": HWM_PUB, "XPUB": HWM_PUB, "SUB": HWM_PUB,
        "ROUTER": HWM_CONTROL, "DEALER": HWM_CONTROL}


class SocketFactory:
    """Makes, tracks and closes sockets for one process; owns its zmq Context and (optionally) endpoints.

    Use as a context manager: on exit every socket is closed with a bounded linger, the
    context is terminated and an owned `Endpoints` run directory is removed.
    """

    def __init__(self, endpoints: Endpoints | None = None, context: zmq.Context | None = None, linger_ms: int = LINGER_MS):
        self.endpoints = endpoints
        self.ctx = context or zmq.Context()
        self._own_ctx = context is None
        self.linger_ms = linger_ms
        self._sockets: list[zmq.Socket] = []
        self.closed = False

    def socket(self, kind: str, endpoint: str, *, bind: bool | None = None, hwm: int | None = None, **options: Any) -> zmq.Socket:
        """A socket of `kind` bound or connected (per BINDS unless `bind` says) to `endpoint`."""
        if kind not in KINDS:
            raise ValueError(f"unknown socket kind {kind!r}")
        sock = self.ctx.socket(KINDS[kind])
        try:
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            limit = HWMS[kind] if hwm is None else hwm
            sock.setsockopt(zmq.SNDHWM, limit)
            sock.setsockopt(zmq.RCVHWM, limit)
            for name, value in options.items():
                sock.setsockopt(getattr(zmq, name), value)
            if BINDS[kind] if bind is None else bind:
                sock.bind(endpoint)
            else:
                sock.connect(endpoint)
        except (zmq.ZMQError, AttributeError, TypeError):  # a bad option or endpoint: no socket is left open
            sock.close(0)
            raise
        self._sockets.append(sock)
        return sock

    def endpoint(self, name: str) -> str:
        if self.endpoints is None:
            raise ValueError("this factory has no Endpoints; pass endpoint strings explicitly")
        return self.endpoints(name)

    @staticmethod
    def bound_address(sock: zmq.Socket) -> str:
        """The address a socket actually bound (resolves `tcp://host:*`)."""
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in self._sockets:
            sock.close(self.linger_ms)
        self._sockets.clear()
        if self._own_ctx:
            self.ctx.term()
        if self.endpoints is not None:
            self.endpoints.close()

    def __enter__(self) -> "SocketFactory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
