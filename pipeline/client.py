"""Remote access to a running `tts-pipeline serve`: subscribing to published chunks, and submitting requests.

A subscriber subscribes first and waits for the server's `welcome` on its topic (the
handshake that replaces sleeping for the slow-joiner problem); only then does a client
submit, so it receives every chunk from the first. Late subscribers get the request's
messages re-published; repeats are dropped by sequence number.
"""
from __future__ import annotations

import uuid
from typing import Any, Iterator

import zmq

from ipc import framing
from ipc.schema import Accepted, Audio, Cancel, End, Error, Message, Request, Welcome
from ipc.sockets import SocketFactory

HANDSHAKE_TIMEOUT_MS = 10_000  # a server that does not welcome a subscription within 10 s is not there
REPLY_TIMEOUT_MS = 30_000  # accepted/error reply to a submitted request
# A request that gets no message for this long fails with a clear error instead of waiting forever on a
# server that went silent (killed, or a network gone): an idle timeout, not a heartbeat, so it must stay
# above the longest wait for a first chunk in a full queue (max-queue requests ahead, seconds each).
IDLE_TIMEOUT_S = 60.0


class RemoteError(RuntimeError):
    """The server rejected a request, a request failed, or the server did not answer."""


class Subscription:
    """Messages published for one request id (or every request, with rid=None), in order, without repeats."""

    def __init__(self, sockets: SocketFactory, pub_endpoint: str, rid: str | None):
        self.rid = rid
        self.sock = sockets.socket("SUB", pub_endpoint, SUBSCRIBE=(rid or "").encode())
        self.last_seq: dict[str, int] = {}
        self._wait_welcome()

    def _wait_welcome(self) -> None:
        want = self.rid or "*"
        while True:
            if not self.sock.poll(HANDSHAKE_TIMEOUT_MS):
                raise RemoteError("no welcome from the publisher: is `tts-pipeline serve` running at that endpoint?")
            topic, msg = framing.recv_published(self.sock)
            if isinstance(msg, Welcome) and msg.rid == want:
                return

    def messages(self, timeout_ms: int | None = None) -> Iterator[Message]:
        """Audio, end and error messages; a request's stream ends with its end or error."""
        while True:
            if timeout_ms is not None and not self.sock.poll(timeout_ms):
                raise RemoteError(f"no message from the server for {timeout_ms / 1000:g} s "
                                  "(it stopped, or is unreachable): giving up on the request")
            topic, msg = framing.recv_published(self.sock)
            if isinstance(msg, Welcome):
                continue
            if self.rid is not None and msg.rid != self.rid:
                continue  # a longer id that shares our prefix
            if msg.seq <= self.last_seq.get(msg.rid, -1):
                continue  # re-published for a late joiner: seen already
            self.last_seq[msg.rid] = msg.seq
            yield msg


class RemoteClient:
    """Submit requests to a server's request endpoint and receive their audio from its publish endpoint."""

    def __init__(self, requests_endpoint: str, pub_endpoint: str, idle_timeout_s: float | None = IDLE_TIMEOUT_S):
        self.requests_endpoint, self.pub_endpoint = requests_endpoint, pub_endpoint
        self.idle_timeout_s = idle_timeout_s  # None: wait forever for the next message of a request
        self.sockets = SocketFactory()
        self.dealer = self.sockets.socket("DEALER", requests_endpoint)

    def close(self) -> None:
        self.sockets.close()

    def __enter__(self) -> "RemoteClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stream(self, text: str, **params: Any) -> Iterator[Audio]:
        """Audio messages of one request, from the first; raises RemoteError when it is rejected or fails."""
        rid = uuid.uuid4().hex
        sub = Subscription(self.sockets, self.pub_endpoint, rid)  # subscribe (and be welcomed) before submitting
        framing.send(self.dealer, Request(rid=rid, text=text, params=params))
        if not self.dealer.poll(REPLY_TIMEOUT_MS):
            raise RemoteError(f"no reply from {self.requests_endpoint}")
        reply = framing.recv(self.dealer)
        if isinstance(reply, Error):
            raise RemoteError(f"{reply.stage}: {reply.message}")
        if not isinstance(reply, Accepted):
            raise RemoteError(f"unexpected reply {reply.KIND}")
        done = False
        try:
            idle_ms = None if self.idle_timeout_s is None else max(1, int(self.idle_timeout_s * 1000))
            for msg in sub.messages(idle_ms):
                if isinstance(msg, Audio):
                    yield msg
                elif isinstance(msg, End):
                    done = True
                    return
                elif isinstance(msg, Error):
                    done = True
                    raise RemoteError(f"{msg.stage}: {msg.message}")
                elif isinstance(msg, Cancel):
                    done = True
                    return
        finally:
            if not done:
                framing.send(self.dealer, Cancel(rid=rid), flags=zmq.NOBLOCK)
