"""The coordinator: admits requests, sends them to T3, assembles audio chunks from HiFiGAN, checks them, publishes them.

It runs as one thread of the launching process and owns every socket it uses:
- `requests` PUSH -> T3 (requests, cancels); `audio` PULL <- HiFiGAN (audio, end, error, cancel);
- `pub` XPUB -> subscribers: every message of every request, topic = request id + TOPIC_END;
- `remote` ROUTER <- remote clients (`tts-pipeline serve`): request / cancel / info, replies accepted / error / info;
- `wake` inproc PULL <- in-process callers and the stage watcher (requests, cancels, stage deaths).

The rules it keeps (docs/architecture.md "Admission", docs/wire-protocol.md):
- **One admission limit**: at most max_inflight + max_queue requests are held at once; past
  that a request gets "server busy: N active, M queued" before `accepted`, and each stage's
  own bound is derived from the same numbers, so no stage refuses an admitted request.
- **Exactly one terminal message per request**: `end` (reason stop / length / cancelled) or
  `error`. A cancel travels T3 -> CFM -> HiFiGAN and back; when it returns, every stage has
  freed the request, and the coordinator publishes `end` with reason `cancelled`.
- **Never blocks on a peer**: sends to T3 are non-blocking, with an outbox flushed when T3
  takes messages again; replies to remote clients are non-blocking (ROUTER drops what it
  cannot deliver); the XPUB drops for a subscriber at its high-water mark.
- **Remote ownership**: only the connection that submitted a request may cancel it; a
  connection that goes away cancels its requests. ZeroMQ does not tell a ROUTER which peer
  left (ROUTER_NOTIFY is a draft API), so while a connection has requests running it gets a
  liveness probe (a `welcome` with rid "*") every PROBE_INTERVAL_S on the request socket; with
  ROUTER_MANDATORY the probe's send fails once that connection is gone. ZMTP heartbeats close
  a TCP connection whose peer went silent, so a vanished host is noticed too.
- **Bounded publishing**: a subscriber's queue holds PUB_HWM messages; a request keeps at most
  REPLAY_BYTES_PER_REQUEST for late subscribers and is re-published at most MAX_REPLAYS times;
  finished requests' replay buffers share REPLAY_BYTES_FINISHED.

Slow joiners are solved by a handshake: when the XPUB sees a subscription it publishes a
`welcome` on that topic, and if the topic is a request it knows, it re-publishes that
request's messages so far (subscribers drop repeats by `seq`).
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from ipc import framing
from ipc.schema import (MAX_RID_LEN, TOPIC_END, Accepted, Audio, Cancel, End, Error, Info, Message,
                        ProtocolError, Request, Welcome, clip, topic)
from ipc.sockets import SocketFactory
from pipeline.longform_coord import LongFormRequests, Planner
from pipeline.request_checks import (RID_PATTERN, RequestError, ServerBusy, error_reply, busy_text, check_text,
                                     new_request_id, readable_rid)
from stages.common.accounting import SAMPLES_PER_TOKEN
from stages.common.chain import DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_QUEUE
from stages.cfm.schedule import ChunkSchedule

REPLAY_FINISHED = 64  # finished requests kept for late subscribers (their messages re-published on subscribe)
# Replay memory: one request keeps at most 4 MiB of published frames (~43 s of float32 audio: the 1000-token
# default cap fits); past that it is not replayed at all (a partial replay would have a hole). With the
# admission limit this bounds the live requests' buffers too (max_inflight + max_queue times this).
REPLAY_BYTES_PER_REQUEST = 4 << 20
REPLAY_BYTES_FINISHED = 64 << 20  # finished requests' replay buffers together; the oldest go first
MAX_REPLAYS = 4  # re-publications of one request (each goes to every subscriber of its topic)
# XPUB queue per subscriber, in messages (ZeroMQ counts messages, not bytes): a default-schedule chunk
# is at most 32 tokens = 123 KiB of float32, so 256 messages hold at most ~32 MiB per subscriber
# (~192 MiB with max_hop_tokens at its limit of 200); past it that subscriber loses messages.
PUB_HWM = 256
# A request the coordinator failed itself (e.g. audio out of order) still holds state in the stages until
# its cancel has travelled the chain; it counts against admission until then, or at most this long
# (a cancel that never comes back means a stage died: the supervisor handles that).
RELEASE_TIMEOUT_S = 30.0
# Remote connections: requests are one header frame (<= 1 MiB); a bigger frame disconnects the peer.
REMOTE_MAX_MSG_BYTES = 2 << 20
HEARTBEAT_IVL_MS = 2_000  # ZMTP PING to every remote peer; a TCP peer silent for
HEARTBEAT_TIMEOUT_MS = 10_000  # this long is disconnected (and its requests cancelled)
# While a remote connection has requests running, it gets a `welcome` (rid "*") this often on the
# request socket: the send fails once the connection is gone, and its requests are cancelled.
PROBE_INTERVAL_S = 0.5
log = logging.getLogger("tts.coordinator")


@dataclass
class Record:
    """One request as the coordinator sees it."""

    rid: str
    sink: "queue.Queue[Message] | None" = None  # in-process consumer
    owner: bytes | None = None  # the ROUTER identity of the remote connection that submitted it
    samples: int = 0  # samples received so far (next expected `start`)
    pub_seq: int = 0  # the coordinator's own message numbering (for subscribers)
    published: list[list[Any]] | None = field(default_factory=list)  # encoded frames for late subscribers; None = over budget
    published_bytes: int = 0
    replays: int = 0
    cancelling: bool = False  # a cancel is on its way through the stages
    done: bool = False


class Coordinator:
    def __init__(self, sockets: SocketFactory, endpoint, schedule: ChunkSchedule | None = None, model=None,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, max_queue: int = DEFAULT_MAX_QUEUE):
        if max_inflight < 1 or max_queue < 0:
            raise ValueError(f"max_inflight must be >= 1 and max_queue >= 0, got {max_inflight} and {max_queue}")
        self.sockets, self.schedule = sockets, schedule or ChunkSchedule()
        self.max_inflight, self.max_queue = max_inflight, max_queue
        self.longform = LongFormRequests(self, Planner(model))  # long texts: one public id, segments inside
        self.to_t3 = sockets.socket("PUSH", endpoint("t3"))
        self.audio = sockets.socket("PULL", endpoint("audio"))
        self.pub = sockets.socket("XPUB", endpoint("pub"), hwm=PUB_HWM, XPUB_VERBOSE=1)  # see every subscription, repeats too
        # ROUTER_MANDATORY: a send to a connection that is gone fails (EHOSTUNREACH) instead of vanishing,
        # which is how the liveness probe (`_probe_owners`) sees a client disconnect.
        self.remote = sockets.socket("ROUTER", endpoint("requests"), ROUTER_MANDATORY=1,
                                     MAXMSGSIZE=REMOTE_MAX_MSG_BYTES, HEARTBEAT_IVL=HEARTBEAT_IVL_MS,
                                     HEARTBEAT_TIMEOUT=HEARTBEAT_TIMEOUT_MS)
        self._next_probe = 0.0
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
        self.releasing: dict[str, float] = {}  # rid -> deadline: failed here, its cancel still on its way through the stages
        self.outbox: deque[list[Any]] = deque()  # encoded messages for T3 it did not take yet (never block on it)
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
        """Validate and admit a request; returns (rid, the queue its messages arrive on, the resolved params).

        Raises ValueError for bad input, ServerBusy past the admission limit, RequestError when the pipeline is dead.
        """
        check_text(text)
        plan, resolved = self.longform.prepare(text, params, self.schedule)  # plan: None unless long-form
        rid = rid or new_request_id()
        sink: queue.Queue[Message] = queue.Queue()
        with self.lock:
            self._admit(Record(rid, sink=sink))  # a long-form request is one admitted request
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
        """Cancel an in-process request (idempotent; a request already ended is left alone)."""
        if self._stop.is_set():
            return  # stopped: the request was failed with `shutting down` and the stages are gone
        try:
            self._wake(Cancel(rid=rid))
        except zmq.ZMQError:  # closed under us by a concurrent close(): nothing left to cancel
            pass

    def held(self) -> int:
        """Requests counted against the admission limit: not yet ended, or still being freed in the stages."""
        with self.lock:
            return self._held()

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

    # --- admission (caller holds the lock) ---------------------------------------------
    def _held(self) -> int:
        now = time.monotonic()
        for rid in [r for r, deadline in self.releasing.items() if deadline < now]:
            del self.releasing[rid]
        return len(self.records) + len(self.releasing)

    def _admit(self, rec: Record) -> None:
        """Take a request in or refuse it: the one admission limit of the pipeline.

        At most max_inflight + max_queue requests are held at once (T3 runs max_inflight, the rest
        wait in its queue); each stage's own bound is derived from the same two numbers, so a
        request admitted here is never refused by a stage.
        """
        self._check_up()  # dead, draining or restarting: that error first
        if rec.rid in self.records or rec.rid in self.finished or rec.rid in self.releasing:
            raise ValueError(f"request id {rec.rid!r} is already in use")
        held = self._held()
        if held >= self.max_inflight + self.max_queue:
            raise ServerBusy(busy_text(held, self.max_inflight, self.max_queue))
        self.records[rec.rid] = rec

    # --- the coordinator thread -------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        for s in (self.audio, self.pub, self.remote, self.wake):
            poller.register(s, zmq.POLLIN)
        handlers = {self.audio: self._on_audio, self.pub: self._on_subscription, self.remote: self._on_remote, self.wake: self._on_wake}
        waiting_out = False
        while not self._stop.is_set():
            if bool(self.outbox) != waiting_out:  # watch T3 for room only while something waits for it
                waiting_out = bool(self.outbox)
                if waiting_out:
                    poller.register(self.to_t3, zmq.POLLOUT)
                else:
                    poller.unregister(self.to_t3)
            if time.monotonic() >= self._next_probe:
                self._next_probe = time.monotonic() + PROBE_INTERVAL_S
                try:
                    self._probe_owners()
                except Exception:  # never let the probe take the coordinator down
                    log.exception("probing remote clients failed")
            for sock, _ in poller.poll(100):
                try:
                    if sock is self.to_t3:
                        self._flush()
                    else:
                        handlers[sock](sock)
                except ProtocolError as e:
                    log.error("dropped a malformed message: %s", clip(str(e), 300))
                except Exception:  # never let one bad message take the coordinator down
                    log.exception("coordinator error")

    def _to_t3(self, msg: Message) -> None:
        """Send to T3 without ever blocking: what T3 cannot take now waits in the outbox, in order."""
        self.outbox.append(framing.encode(msg))
        self._flush()

    def _flush(self) -> None:
        while self.outbox:
            try:
                self.to_t3.send_multipart(self.outbox[0], flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.outbox.popleft()

    def _on_wake(self, sock) -> None:
        msg = framing.recv(sock)
        if isinstance(msg, Request):
            if self.longform.launch(msg.rid):
                return  # a long-form request: its segments go to T3 one after another
            self._to_t3(msg)
        elif isinstance(msg, Cancel):
            rec = self.records.get(msg.rid)
            if rec is not None:
                self._cancel(rec)  # (a long-form request: cancelled with every segment)
            else:  # ended here already: still passed on, so a stage that holds leftovers frees them (harmless otherwise)
                self._to_t3(msg)
        elif isinstance(msg, Error):  # a stage died
            self._fail_everything(msg.message)

    def _cancel(self, rec: Record) -> None:
        if rec.done or rec.cancelling:
            return
        if self.longform.cancel(rec.rid):
            return  # a long-form request: ended `cancelled` now, its segments' cancels sent
        rec.cancelling = True
        self._to_t3(Cancel(rid=rec.rid))

    def _fail_everything(self, reason: str) -> None:
        with self.lock:
            live = [r for r in self.records.values() if not r.done]
            self._orphans.extend(r.rid for r in live)
            self._orphans.extend(sid for r in live for sid in self.longform.segment_ids(r.rid))  # long-form segments too
            self._orphans.extend(self.releasing)  # their cancels may have died with the stage: sent again once it is back
            self.releasing.clear()
        if live:
            log.error("%s: failing %d request(s)", reason, len(live))
        for rec in live:
            self._finish(rec, error_reply(rec.rid, reason, stage="pipeline"))

    def _on_audio(self, sock) -> None:
        msg = framing.recv(sock)
        if self.longform.on_stage_message(msg):
            return  # a segment of a long-form request: republished under its public id
        rec = self.records.get(msg.rid)
        if rec is None or rec.done:
            if isinstance(msg, (Cancel, Error)):
                with self.lock:  # the cancel of a request failed here came back: the stages hold nothing of it now
                    self.releasing.pop(msg.rid, None)
            return  # a message of a request already failed/cancelled here
        if isinstance(msg, Audio):
            if msg.start != rec.samples:
                self._finish(rec, error_reply(rec.rid, f"audio out of order: chunk starts at {msg.start}, expected {rec.samples}"),
                             release=True)
                return
            rec.samples += int(msg.pcm.shape[0])
            self._deliver(rec, msg)
        elif isinstance(msg, End):
            tokens, samples = msg.totals.get("tokens", -1), msg.totals.get("samples", -1)
            if samples != rec.samples or samples != SAMPLES_PER_TOKEN * tokens:
                msg = error_reply(rec.rid, f"audio lost: received {rec.samples} samples, HiFiGAN sent {samples} for {tokens} tokens")
            self._finish(rec, msg)
        elif isinstance(msg, Error):
            self._finish(rec, msg)
        elif isinstance(msg, Cancel):  # the cancel went through every stage: each freed the request
            self._finish(rec, End(rid=rec.rid, totals={"samples": rec.samples}, reason="cancelled"))

    def _deliver(self, rec: Record, msg: Message) -> None:
        """Hand a message to the in-process consumer and publish it (renumbered in the coordinator's sequence)."""
        msg = dataclasses.replace(msg, seq=rec.pub_seq)
        rec.pub_seq += 1
        frames = framing.encode(msg)
        if rec.published is not None:
            size = sum(len(f) for f in frames)  # bytes and byte memoryviews
            if rec.published_bytes + size <= REPLAY_BYTES_PER_REQUEST:
                rec.published.append(frames)
                rec.published_bytes += size
            else:  # too long to keep: no replay at all rather than one with a hole
                rec.published, rec.published_bytes = None, 0
        self.pub.send_multipart([topic(rec.rid), *frames], copy=False)  # XPUB never blocks: it drops at the HWM
        if rec.sink is not None:
            rec.sink.put(msg)

    def _finish(self, rec: Record, msg: Message, release: bool = False) -> None:
        """The request's one terminal message: delivered, published, and the request leaves admission.

        release: the stages may still hold the request (the coordinator failed it): send a cancel,
        and count it against admission until that cancel comes back.
        """
        self._deliver(rec, msg)
        rec.done = True
        with self.lock:
            self.records.pop(rec.rid, None)
            self.finished[rec.rid] = rec
            if release and not self.dead:
                self.releasing[rec.rid] = time.monotonic() + RELEASE_TIMEOUT_S
            self._trim_finished()
        self.longform.on_finish(rec.rid)  # a long-form request: cancel its segments still in the stages
        if release and not rec.cancelling and not self.dead:  # (a cancel already on its way frees it as well)
            self._to_t3(Cancel(rid=rec.rid))

    def _trim_finished(self) -> None:
        kept = sum(r.published_bytes for r in self.finished.values())
        while self.finished and (len(self.finished) > REPLAY_FINISHED or kept > REPLAY_BYTES_FINISHED):
            _, old = self.finished.popitem(last=False)
            kept -= old.published_bytes

    def _on_subscription(self, sock) -> None:
        event = sock.recv()
        if not event or event[0] != 1:
            return  # an unsubscription
        sub = event[1:]
        name = sub[:-1] if sub.endswith(TOPIC_END) else sub
        rid = name.decode("utf-8", "replace").replace("\x00", "")[:MAX_RID_LEN] or "*"
        welcome = Welcome(rid=rid)
        sock.send_multipart([sub, *framing.encode(welcome)])  # on the subscription's own bytes: it reaches that subscriber
        if not sub.endswith(TOPIC_END):
            return  # the empty (or a prefix) subscription: live messages only
        rec = self.records.get(rid) or self.finished.get(rid)
        if rec is not None and rec.published is not None and rec.replays < MAX_REPLAYS:  # a late joiner: replay
            rec.replays += 1
            for frames in list(rec.published):
                sock.send_multipart([topic(rec.rid), *frames], copy=False)

    def _reply(self, identity: bytes, msg: Message, quiet: bool = False) -> bool:
        """Send to one remote connection without waiting; False when that connection is gone."""
        try:
            self.remote.send_multipart([identity, *framing.encode(msg)], flags=zmq.NOBLOCK)
        except zmq.Again:  # that client does not read its replies: its loss, never our wait
            if not quiet:
                log.warning("could not send %s to a remote client (its queue is full)", msg.KIND)
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                raise
            self._disconnected(identity)
            return False
        return True

    def _probe_owners(self) -> None:
        with self.lock:  # callers' threads add records meanwhile
            owners = {rec.owner for rec in self.records.values() if rec.owner is not None and not rec.cancelling}
        for identity in owners:
            self._reply(identity, Welcome(rid="*"), quiet=True)  # a full queue: the client is there, just not reading

    def _on_remote(self, sock) -> None:
        identity, *frames = sock.recv_multipart(copy=False)
        identity = bytes(identity.buffer)
        if len(frames) > 1 and len(frames[0]) == 0:  # a REQ-style envelope: say so rather than "not MessagePack"
            self._reply(identity, error_reply(readable_rid(frames[1:]), "the first frame is empty: a DEALER message is "
                                         "[header] with no empty delimiter frame (docs/wire-protocol.md, Frames)"))
            return
        try:
            msg = framing.decode(frames)
        except ProtocolError as e:
            self._reply(identity, error_reply(readable_rid(frames), str(e)))
            return
        if isinstance(msg, Cancel):
            self._remote_cancel(identity, msg.rid)
            return
        if isinstance(msg, Info):  # what this server runs: a front end validates requests with it
            self._reply(identity, Info(rid=msg.rid, model=self.longform.planner.model_kind(), schedule=self.schedule.to_dict()))
            return
        if not isinstance(msg, Request):
            reply: Message = error_reply(msg.rid, f"expected a request, a cancel or an info, got {msg.KIND}")
        elif not RID_PATTERN.match(msg.rid):
            reply = error_reply(msg.rid, "request id must be 1-64 of [A-Za-z0-9_.-]")
        else:
            try:
                check_text(msg.text)
                plan, resolved = self.longform.prepare(msg.text, msg.params, self.schedule)
                with self.lock:
                    self._admit(Record(msg.rid, owner=identity))
                if plan is not None:
                    self.longform.begin(msg.rid, plan)
                else:
                    self._to_t3(Request(rid=msg.rid, text=msg.text, params=resolved))
                reply = Accepted(rid=msg.rid, params=resolved)
            except (ValueError, TypeError, RequestError) as e:
                reply = error_reply(msg.rid, str(e))
            except Exception as e:  # a bug, not the client's: it still gets its one reply
                log.exception("admitting remote request %s failed", msg.rid[:64])
                with self.lock:
                    self.records.pop(msg.rid, None)
                reply = error_reply(msg.rid, f"internal error: {type(e).__name__}: {e}")
        self._reply(identity, reply)

    def _remote_cancel(self, identity: bytes, rid: str) -> None:
        """A remote cancel: only the connection that submitted the request may cancel it; no reply when it does."""
        rec = self.records.get(rid)
        if rec is None:
            why = "has already ended" if rid in self.finished else "is not a request of this server"
            self._reply(identity, error_reply(rid, f"cannot cancel {rid!r}: it {why}"))
        elif rec.owner != identity:
            self._reply(identity, error_reply(rid, f"cannot cancel {rid!r}: it was submitted on another connection"))
        else:
            self._cancel(rec)

    def _disconnected(self, identity: bytes) -> None:
        """A remote connection went away: its requests are cancelled (nobody can cancel them any more)."""
        with self.lock:
            mine = [rec for rec in self.records.values() if rec.owner == identity]
        if mine:
            log.info("a remote client disconnected: cancelling its %d request(s)", len(mine))
        for rec in mine:
            self._cancel(rec)
