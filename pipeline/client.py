"""Remote access to a running `tts-pipeline serve`: subscribing to published chunks, and submitting requests.

A subscriber subscribes first and waits for the server's `welcome` on its topic (the
handshake that replaces sleeping for the slow-joiner problem); only then does a client
submit, so it receives every chunk from the first. Late subscribers get the request's
messages re-published; repeats are dropped by sequence number. A request's topic is its id
followed by `TOPIC_END`, so request `a1` never sees the messages of `a10`.

`info()` asks the server what it runs (model family, default chunk schedule), so a front end
can validate requests with the server's rules before sending them.

Every request ends with exactly one terminal message: `end` (reason `stop`, `length` or
`cancelled`) or `error`. Closing a client (or its process ending) cancels the requests it
submitted: the server sees the connection go away.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import zmq

from ipc import framing
from ipc.schema import Accepted, Audio, Cancel, End, Error, Info, Message, Request, Welcome, topic
from ipc.sockets import SocketFactory

HANDSHAKE_TIMEOUT_MS = 10_000  # a server that does not welcome a subscription within 10 s is not there
REPLY_TIMEOUT_MS = 30_000  # accepted/error reply to a submitted request
# A request that gets no message for this long fails with a clear error instead of waiting forever on a
# server that went silent (killed, or a network gone): an idle timeout, not a heartbeat, so it must stay
# above the longest wait for a first chunk in a full queue (max-queue requests ahead, seconds each).
IDLE_TIMEOUT_S = 60.0
# A server from before the `info` kind refuses it as it refuses any kind it does not know, with an error
# reply saying so (ipc/framing.py): such a server runs the base model with the default chunk schedule.
UNKNOWN_KIND = "unknown message kind"


class RemoteError(RuntimeError):
    """The server rejected a request, a request failed, or the server did not answer."""


class Subscription:
    """Messages published for one request id (or every request, with rid=None), in order, without repeats."""

    def __init__(self, sockets: SocketFactory, pub_endpoint: str, rid: str | None):
        self.rid = rid
        self.sock = sockets.socket("SUB", pub_endpoint, SUBSCRIBE=topic(rid) if rid else b"")
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
                continue  # cannot happen with the topic terminator; a check that costs nothing
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
        self.last_end: End | None = None

    def close(self) -> None:
        self.sockets.close()

    def __enter__(self) -> "RemoteClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _reply(self, rid: str, timeout_ms: int = REPLY_TIMEOUT_MS) -> Message:
        """The server's reply to our request `rid` (replies to earlier messages, e.g. a late cancel's, are skipped)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while (left := deadline - time.monotonic()) > 0 and self.dealer.poll(int(left * 1000) + 1):
            reply = framing.recv(self.dealer)
            if reply.rid == rid and not isinstance(reply, Welcome):  # welcome "*": the server's liveness probe
                return reply
        raise RemoteError(f"no reply from {self.requests_endpoint}")

    def info(self, timeout_ms: int = REPLY_TIMEOUT_MS) -> Info | None:
        """What the server runs (its model family and default chunk schedule); None from a server that
        predates the `info` kind. Raises RemoteError when the server does not answer within `timeout_ms`."""
        rid = uuid.uuid4().hex
        framing.send(self.dealer, Info(rid=rid))
        reply = self._reply(rid, timeout_ms)
        if isinstance(reply, Info):
            return reply
        if isinstance(reply, Error) and UNKNOWN_KIND in reply.message:
            return None
        raise RemoteError(f"unexpected reply to info: {reply.KIND}"
                          + (f" ({reply.stage}: {reply.message})" if isinstance(reply, Error) else ""))

    def stream(self, text: str, **params: Any) -> Iterator[Audio]:
        """Audio messages of one request, from the first; raises RemoteError when it is rejected or fails.

        The request's `end` is kept in `self.last_end` (its reason: stop, length, or cancelled).
        """
        rid = uuid.uuid4().hex
        sub = Subscription(self.sockets, self.pub_endpoint, rid)  # subscribe (and be welcomed) before submitting
        framing.send(self.dealer, Request(rid=rid, text=text, params=params))
        reply = self._reply(rid)
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
                elif isinstance(msg, End):  # stop, length or cancelled
                    self.last_end, done = msg, True
                    return
                elif isinstance(msg, Error):
                    done = True
                    raise RemoteError(f"{msg.stage}: {msg.message}")
        finally:
            if not done:
                framing.send(self.dealer, Cancel(rid=rid), flags=zmq.NOBLOCK)
