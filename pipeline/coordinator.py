"""The coordinator: assigns request ids, sends requests to T3, assembles audio chunks from HiFiGAN, checks them, publishes them.

It runs as one thread of the launching process and owns every socket it uses:
- `requests` PUSH -> T3 (requests, cancels); `audio` PULL <- HiFiGAN (audio, end, error);
- `pub` XPUB -> subscribers: every message of every request, topic = request id;
- `remote` ROUTER <- remote clients (`tts-pipeline serve`): request / cancel, replies accepted / error;
- `wake` inproc PULL <- in-process callers and the stage watcher (requests, cancels, stage deaths).

Slow joiners are solved by a handshake: when the XPUB sees a subscription it publishes a
`welcome` on that topic, and if the topic is a request it knows, it re-publishes that
request's messages so far (subscribers drop repeats by `seq`).
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import zmq

from ipc import framing
from ipc.schema import MAX_TEXT_CHARS, Accepted, Audio, Cancel, End, Error, Message, ProtocolError, Request, Welcome
from ipc.sockets import SocketFactory
from pipeline.longform_coord import LongFormRequests, Planner
from stages.common.accounting import SAMPLES_PER_TOKEN
from stages.cfm.schedule import ChunkSchedule

REPLAY_FINISHED = 64  # finished requests kept for late subscribers (their messages re-published on subscribe)
RID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # client-chosen ids: safe as topics and in logs
log = logging.getLogger("tts.coordinator")


class RequestError(RuntimeError):
    """A request failed; the message names the stage and the reason."""


def new_request_id() -> str:
    """Fixed-length ids (32 hex chars), so no id is a topic prefix of another."""
    return uuid.uuid4().hex


def check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty or whitespace only")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(text)} characters, over the limit of {MAX_TEXT_CHARS} (split it into sentences)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: it cannot travel (UTF-8 on the wire)
        raise ValueError(f"text is not valid Unicode: {e.object[e.start:e.end]!r} at position {e.start} "
                         "(a lone surrogate) cannot be encoded") from None
    return text


@dataclass
class Record:
    """One request as the coordinator sees it."""

    rid: str
    sink: "queue.Queue[Message] | None" = None  # in-process consumer
    samples: int = 0  # samples received so far (next expected `start`)
    pub_seq: int = 0  # the coordinator's own message numbering (for subscribers)
    published: list[list[Any]] = field(default_factory=list)  # encoded frames, for late subscribers
    done: bool = False


class Coordinator:
    def __init__(self, sockets: SocketFactory, endpoint, schedule: ChunkSchedule | None = None, model=None):
        self.sockets, self.schedule = sockets, schedule or ChunkSchedule()
        self.longform = LongFormRequests(self, Planner(model))  # long texts: one public id, segments inside
        self.to_t3 = sockets.socket("PUSH", endpoint("t3"))
        self.audio = sockets.socket("PULL", endpoint("audio"))
        self.pub = sockets.socket("XPUB", endpoint("pub"), XPUB_VERBOSE=1)  # see every subscription, repeats too
        self.remote = sockets.socket("ROUTER", endpoint("requests"))
        wake_addr = f"inproc://coordinator-{uuid.uuid4().hex}"
        self.wake = sockets.socket("PULL", wake_addr, hwm=0)  # callers' requests: never dropped, never blocking
        self._wake_push = sockets.socket("PUSH", wake_addr, hwm=0)
        self._wake_lock = threading.Lock()
        self.endpoints = {
            "pub": SocketFactory.bound_address(self.pub),
            "requests": SocketFactory.bound_address(self.remote),
        }
        self.records: dict[str, Record] = {}
        self.finished: OrderedDict[str, Record] = OrderedDict()
        self.lock = threading.Lock()
        self.dead: str | None = None  # set when the supervisor gave up: every request fails from then on
        self.draining: str | None = None  # set by Pipeline.close(drain=...): new requests are refused
        self.down: dict[str, str] = {}  # stage -> why it is down, while the supervisor restarts it
        self._orphans: list[str] = []  # requests failed by a stage's death: cancelled again once it is back
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tts-coordinator", daemon=True)

    # --- called from any thread -----------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, text: str, params: dict[str, Any] | None = None, rid: str | None = None) -> tuple[str, "queue.Queue[Message]", dict]:
        """Validate and queue a request; returns (rid, the queue its messages arrive on, the resolved params)."""
        check_text(text)
        plan, resolved = self.longform.prepare(text, params, self.schedule)  # plan: None unless long-form
        rid = rid or new_request_id()
        sink: queue.Queue[Message] = queue.Queue()
        with self.lock:
            self._check_up()
            if rid in self.records or rid in self.finished:
                raise ValueError(f"request id {rid!r} is already in use")
            self.records[rid] = Record(rid, sink=sink)
        if plan is not None:
            self.longform.stage(rid, plan)
        try:
            self._wake(Request(rid=rid, text=text, params=resolved))
        except BaseException:  # it never left: the id is free again
            with self.lock:
                self.records.pop(rid, None)
            self.longform.unstage(rid)
            raise
        return rid, sink, resolved

    def cancel(self, rid: str) -> None:
        if self._stop.is_set():
            return  # stopped: the request was failed with `shutting down` and the stages are gone
        try:
            self._wake(Cancel(rid=rid))
        except zmq.ZMQError:  # closed under us by a concurrent close(): nothing left to cancel
            pass

    # --- shutdown (called by Pipeline.close) ---------------------------------------------
    def in_flight(self) -> int:
        with self.lock:
            return len(self.records)

    def fail_all(self, message: str, wait_s: float = 1.0) -> None:
        """Fail every request still in flight with `message` (published too), waiting up to wait_s for the coordinator thread to do it."""
        if self._thread.is_alive():
            self._wake(Error(rid="pipeline", stage="pipeline", message=message))
            deadline = time.monotonic() + wait_s
            while self.in_flight() and time.monotonic() < deadline:
                time.sleep(0.01)  # the coordinator thread is failing them (one wake message, microseconds each)

    # --- supervision (called from the supervisor's watcher thread) ------------------------
    def _check_up(self) -> None:
        """Under self.lock: RequestError unless every stage is up (`restarting` while one is restarted)."""
        if self.dead:
            raise RequestError(self.dead)
        if self.draining:
            raise RequestError(f"shutting down: {self.draining}")
        if self.down:
            stage, why = next(iter(self.down.items()))
            raise RequestError(f"restarting: {why}; the stage is being restarted, retry in a few seconds")

    def stage_died(self, stage: str, message: str) -> None:
        """A stage died: refuse new requests until it is back, fail every request in flight (naming it)."""
        with self.lock:
            self.down[stage] = message
        self._wake(Error(rid=stage, stage=stage, message=message))

    def stage_ready(self, stage: str) -> None:
        """A restarted stage is up: cancel the failed requests once more (the chain frees what it still holds), then accept."""
        with self.lock:
            orphans, self._orphans = self._orphans, []
        for rid in orphans:
            self._wake(Cancel(rid=rid))
        with self.lock:
            self.down.pop(stage, None)

    def give_up(self, message: str) -> None:
        """The supervisor stopped restarting: every request fails from now on."""
        with self.lock:
            self.dead = message
        self._wake(Error(rid="pipeline", stage="pipeline", message=message))

    def _wake(self, msg: Message) -> None:
        with self._wake_lock:
            framing.send(self._wake_push, msg)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        with self.lock:  # a consumer still reading must not block forever on a sink nobody fills
            live, self.records = list(self.records.values()), {}
        for rec in live:
            if rec.sink is not None:
                rec.sink.put(Error(rid=rec.rid, stage="pipeline", message="shutting down: the pipeline was closed"))

    # --- the coordinator thread -------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        for s in (self.audio, self.pub, self.remote, self.wake):
            poller.register(s, zmq.POLLIN)
        handlers = {self.audio: self._on_audio, self.pub: self._on_subscription, self.remote: self._on_remote, self.wake: self._on_wake}
        while not self._stop.is_set():
            for sock, _ in poller.poll(100):
                try:
                    handlers[sock](sock)
                except ProtocolError as e:
                    log.error("dropped a malformed message: %s", e)
                except Exception:  # never let one bad message take the coordinator down
                    log.exception("coordinator error")

    def _on_wake(self, sock) -> None:
        msg = framing.recv(sock)
        if isinstance(msg, Request) and self.longform.launch(msg.rid):
            return  # a long-form request: its segments go to T3 one after another
        if isinstance(msg, Cancel) and self.longform.cancel(msg.rid):
            return  # a long-form request: cancelled with every segment
        if isinstance(msg, (Request, Cancel)):
            framing.send(self.to_t3, msg)
        elif isinstance(msg, Error):  # a stage died
            self._fail_everything(msg.message)

    def _fail_everything(self, reason: str) -> None:
        with self.lock:
            live = [r for r in self.records.values() if not r.done]
            self._orphans.extend(r.rid for r in live)
            self._orphans.extend(sid for r in live for sid in self.longform.segment_ids(r.rid))  # long-form segments too
        if live:
            log.error("%s: failing %d request(s)", reason, len(live))
        for rec in live:
            self._finish(rec, Error(rid=rec.rid, stage="pipeline", message=reason))

    def _on_audio(self, sock) -> None:
        msg = framing.recv(sock)
        if self.longform.on_stage_message(msg):
            return  # a segment of a long-form request: republished under its public id
        rec = self.records.get(msg.rid)
        if rec is None or rec.done:
            return  # a message of a request already failed/cancelled here
        if isinstance(msg, Audio):
            if msg.start != rec.samples:
                self._finish(rec, Error(rid=rec.rid, stage="coordinator",
                                        message=f"audio out of order: chunk starts at {msg.start}, expected {rec.samples}"))
                return
            rec.samples += int(msg.pcm.shape[0])
            self._deliver(rec, msg)
        elif isinstance(msg, End):
            tokens, samples = msg.totals.get("tokens", -1), msg.totals.get("samples", -1)
            if samples != rec.samples or samples != SAMPLES_PER_TOKEN * tokens:
                msg = Error(rid=rec.rid, stage="coordinator",
                            message=f"audio lost: received {rec.samples} samples, HiFiGAN sent {samples} for {tokens} tokens")
            self._finish(rec, msg)
        elif isinstance(msg, (Error, Cancel)):
            self._finish(rec, msg)

    def _deliver(self, rec: Record, msg: Message) -> None:
        """Hand a message to the in-process consumer and publish it (renumbered in the coordinator's sequence)."""
        msg = dataclasses.replace(msg, seq=rec.pub_seq)
        rec.pub_seq += 1
        frames = framing.encode(msg)
        rec.published.append(frames)
        self.pub.send_multipart([rec.rid.encode(), *frames], copy=False)
        if rec.sink is not None:
            rec.sink.put(msg)

    def _finish(self, rec: Record, msg: Message) -> None:
        self._deliver(rec, msg)
        rec.done = True
        with self.lock:
            self.records.pop(rec.rid, None)
            self.finished[rec.rid] = rec
            while len(self.finished) > REPLAY_FINISHED:
                self.finished.popitem(last=False)
        self.longform.on_finish(rec.rid)  # a long-form request: cancel its segments still in the stages
        if isinstance(msg, Error):  # free whatever the stages still hold; never block on a dead T3
            try:
                framing.send(self.to_t3, Cancel(rid=rec.rid), flags=zmq.NOBLOCK)
            except zmq.Again:
                log.warning("could not send a cancel for %s: T3 is not taking messages", rec.rid)

    def _on_subscription(self, sock) -> None:
        event = sock.recv()
        if not event or event[0] != 1:
            return  # an unsubscription
        topic = event[1:].decode("utf-8", "replace")
        welcome = Welcome(rid=topic or "*")
        sock.send_multipart([welcome.rid.encode(), *framing.encode(welcome)])
        rec = self.records.get(topic) or self.finished.get(topic)
        if rec is not None:  # a late joiner: replay what this request published so far
            for frames in list(rec.published):
                sock.send_multipart([rec.rid.encode(), *frames], copy=False)

    def _on_remote(self, sock) -> None:
        identity, *frames = sock.recv_multipart(copy=False)
        identity = bytes(identity.buffer)
        try:
            msg = framing.decode(frames)
        except ProtocolError as e:
            sock.send_multipart([identity, *framing.encode(Error(rid="unknown", stage="coordinator", message=str(e)))])
            return
        if isinstance(msg, Cancel):
            if not self.longform.cancel(msg.rid):
                framing.send(self.to_t3, msg)
            return
        if not isinstance(msg, Request):
            reply: Message = Error(rid=msg.rid, stage="coordinator", message=f"expected a request, got {msg.KIND}")
        elif not RID_PATTERN.match(msg.rid):
            reply = Error(rid=msg.rid, stage="coordinator", message="request id must be 1-64 of [A-Za-z0-9_.-]")
        else:
            try:
                check_text(msg.text)
                plan, resolved = self.longform.prepare(msg.text, msg.params, self.schedule)
                with self.lock:
                    self._check_up()
                    if msg.rid in self.records or msg.rid in self.finished:
                        raise ValueError(f"request id {msg.rid!r} is already in use")
                    self.records[msg.rid] = Record(msg.rid)
                if plan is not None:
                    self.longform.begin(msg.rid, plan)
                else:
                    framing.send(self.to_t3, Request(rid=msg.rid, text=msg.text, params=resolved))
                reply = Accepted(rid=msg.rid, params=resolved)
            except (ValueError, RequestError) as e:
                reply = Error(rid=msg.rid, stage="coordinator", message=str(e))
        sock.send_multipart([identity, *framing.encode(reply)])
