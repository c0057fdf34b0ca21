"""The wire contract, closed (docs/wire-protocol.md), and cancels that cut work.

- every request ends with exactly one terminal message: `end` (stop / length / cancelled) or `error`;
- topics cannot collide: `a1` never sees `a10`'s messages;
- error replies echo the rid whenever it is readable, and always fit the schema's limits;
- a cancel of an unknown id, or of another connection's request, gets an error reply; a client that
  disconnects cancels its requests;
- 10,000 malformed messages to the request socket each get an error reply; 10,000 to each stage's
  input socket kill no stage; a good request afterwards succeeds;
- under load a cancel overtakes the request's queued work: the `end` (cancelled) comes back after
  little more audio, and the other requests are bit-identical to their solo runs.

A cancelled request's `end` is published only when the cancel has come back from HiFiGAN, i.e.
after T3, CFM and HiFiGAN each freed the request (each frees it when it reads the cancel, then
passes the cancel on): seeing that `end` is seeing the request freed in every stage.
"""
from __future__ import annotations

import threading

import msgpack
import numpy as np
import pytest
import zmq

from ipc import framing
from ipc.schema import (ERROR_TEXT_CHARS, PROTOCOL_VERSION, Accepted, Audio, Cancel, End, Error, Mel, Request, Tokens,
                        Welcome, topic)
from ipc.sockets import SocketFactory
from pipeline.api import Pipeline
from pipeline.client import Subscription
from pipeline.launcher import PipelineConfig
from pipeline.models import ModelSpec
from pipeline.request_checks import UNREADABLE_RID

from .conftest import FAST

MALFORMED = 10_000  # messages per socket (the figure; each costs tens of microseconds)
BATCH = 500  # malformed messages sent before reading their replies (under the sockets' high-water marks)
TIMEOUT_MS = 30_000  # a reply or message that does not come within this fails the test instead of hanging it
LONG = 1400  # tokens of a request that runs until something stops it
MAX_HOP_TOKENS = 32  # the default schedule's largest chunk
MAX_INFLIGHT = 8


@pytest.fixture(scope="module")
def tts():
    with Pipeline(PipelineConfig(model=ModelSpec(), threads=1, max_inflight=MAX_INFLIGHT, max_queue=56)) as p:
        yield p


@pytest.fixture
def sockets():
    with SocketFactory(linger_ms=0) as f:
        yield f


def dealer(sockets, tts):
    return sockets.socket("DEALER", tts.endpoints["requests"])


def reply_to(sock, rid: str | None = None):
    """The next reply on a DEALER, skipping the server's liveness probes (`welcome` "*")."""
    while True:
        assert sock.poll(TIMEOUT_MS), "no reply"
        msg = framing.recv(sock)
        if not isinstance(msg, Welcome):
            break
        assert msg.rid == "*"
    assert rid is None or msg.rid == rid, (msg.rid, rid)
    return msg


def terminal(sub: Subscription) -> tuple[list, object]:
    """Every message of the subscription's request up to its terminal one, which must be the only one."""
    seen = []
    for msg in sub.messages(timeout_ms=TIMEOUT_MS):
        seen.append(msg)
        if isinstance(msg, (End, Error)):
            return seen[:-1], msg
        assert isinstance(msg, Audio), f"unexpected {msg.KIND} before the end"


def test_a_cancelled_request_ends_with_one_end_cancelled_and_ids_never_collide(tts, sockets):
    d = dealer(sockets, tts)
    subs = {rid: Subscription(sockets, tts.endpoints["pub"], rid) for rid in ("a1", "a10")}
    for rid, n in (("a1", LONG), ("a10", 9)):
        framing.send(d, Request(rid=rid, text="Who am I?", params={"seed": 3, "ignore_eos": True, "max_new_tokens": n, **FAST}))
        assert isinstance(reply_to(d, rid), Accepted)
    audio10, end10 = terminal(subs["a10"])
    assert isinstance(end10, End) and end10.reason == "length" and end10.totals["samples"] == 960 * 9
    assert {m.rid for m in audio10} == {"a10"}
    framing.send(d, Cancel(rid="a1"))
    audio1, end1 = terminal(subs["a1"])
    assert {m.rid for m in audio1} <= {"a1"}
    assert isinstance(end1, End) and end1.reason == "cancelled" and end1.rid == "a1"
    assert end1.totals == {"samples": sum(m.pcm.size for m in audio1)} and end1.totals["samples"] < 960 * LONG
    with pytest.raises(Exception, match="no message"):  # nothing after the one terminal message
        next(subs["a1"].messages(timeout_ms=300))


def test_cancel_of_an_unknown_id_or_of_another_connections_request_gets_an_error(tts, sockets):
    owner, other = dealer(sockets, tts), dealer(sockets, tts)
    framing.send(other, Cancel(rid="nobody-has-this"))
    err = reply_to(other, "nobody-has-this")
    assert isinstance(err, Error) and "not a request of this server" in err.message
    sub = Subscription(sockets, tts.endpoints["pub"], "mine")
    framing.send(owner, Request(rid="mine", text="Mine alone.", params={"seed": 4, "ignore_eos": True, "max_new_tokens": 12, **FAST}))
    assert isinstance(reply_to(owner, "mine"), Accepted)
    framing.send(other, Cancel(rid="mine"))
    err = reply_to(other, "mine")
    assert isinstance(err, Error) and "another connection" in err.message
    audio, end = terminal(sub)  # the owner's request ran to its end regardless
    assert isinstance(end, End) and end.reason == "length" and end.totals["samples"] == 960 * 12
    framing.send(owner, Cancel(rid="mine"))
    err = reply_to(owner, "mine")
    assert isinstance(err, Error) and "already ended" in err.message


def test_a_client_that_disconnects_cancels_its_requests(tts, sockets):
    sub = Subscription(sockets, tts.endpoints["pub"], "orphan")
    with SocketFactory(linger_ms=0) as theirs:
        d = theirs.socket("DEALER", tts.endpoints["requests"])
        framing.send(d, Request(rid="orphan", text="Left alone.", params={"seed": 5, "ignore_eos": True, "max_new_tokens": LONG, **FAST}))
        assert isinstance(reply_to(d, "orphan"), Accepted)
        first = next(sub.messages(timeout_ms=TIMEOUT_MS))
        assert isinstance(first, Audio)
    audio, end = terminal(sub)  # the connection is gone: the server cancels what it submitted
    assert isinstance(end, End) and end.reason == "cancelled" and end.totals["samples"] < 960 * LONG


def test_error_replies_echo_the_rid_and_fit_the_wire(tts, sockets):
    d = dealer(sockets, tts)
    good = msgpack.unpackb(bytes(framing.encode(Request(rid="x", text="Hi.", params={}))[0]))
    cases = {
        "no-tensors": {k: v for k, v in {**good, "rid": "no-tensors"}.items() if k != "tensors"},
        "huge-value": {**good, "rid": "huge-value", "params": {"temperature": "t" * 100_000}},
        "nested": {**good, "rid": "nested", "params": {"seed": [1, 2]}},
        "bad-seed": {**good, "rid": "bad-seed", "params": {"seed": 2**63}},
    }
    for rid, header in cases.items():
        d.send_multipart([msgpack.packb(header)])
        err = reply_to(d)
        assert isinstance(err, Error) and err.rid == rid, (rid, err)
        assert len(err.message) <= ERROR_TEXT_CHARS
    d.send_multipart([b"\xc1 not msgpack"])
    assert reply_to(d).rid == UNREADABLE_RID
    d.send_multipart([b"", msgpack.packb({**good, "rid": "req-style"})])  # a REQ envelope: the reply says what is wrong
    err = reply_to(d, "req-style")
    assert isinstance(err, Error) and "no empty delimiter frame" in err.message


def malformed(n: int, seed: int, kind: str, router: bool = False) -> list[list[bytes]]:
    """Random bytes, truncated MessagePack, wrong types, big frames, unknown kinds, other versions, foreign kinds."""
    rng = np.random.default_rng(seed)
    proto = {"request": framing.encode(Request(rid="m", text="Hi.", params={"seed": 1})),
             "tokens": framing.encode(Tokens(rid="m", start=0, ids=np.arange(4, dtype=np.int64))),
             "mel": framing.encode(Mel(rid="m", start=0, mel=np.zeros((80, 2), np.float32)))}[kind]
    head = bytes(proto[0])
    header = msgpack.unpackb(head)
    rest = [bytes(f) for f in proto[1:]]

    def rid(k):
        return f"ghost{k}"

    makers = [
        lambda k: [rng.bytes(int(rng.integers(1, 64))) for _ in range(int(rng.integers(1, 4)))],
        lambda k: [head[: int(rng.integers(1, len(head)))], *rest],
        lambda k: [msgpack.packb({**header, "rid": rid(k), "seq": "x"}), *rest],
        lambda k: [msgpack.packb({**header, "rid": rid(k), "kind": "bogus" * int(rng.integers(1, 5000))}), *rest],
        lambda k: [msgpack.packb({**header, "rid": rid(k), "v": PROTOCOL_VERSION + 1}), *rest],
        lambda k: [msgpack.packb({**header, "rid": rid(k), "v": "x" * 50_000}), *rest],
        lambda k: [msgpack.packb({**header, "rid": rid(k), "tensors": [{"name": "z", "dtype": "int64", "shape": [10**9]}]}), *rest],
        lambda k: [msgpack.packb({**header, "rid": rid(k), "unknown_" + "u" * 20_000: 1}), *rest],
        lambda k: [msgpack.packb({**header, "rid": "r\x00" + rid(k)}), *rest],
        lambda k: [msgpack.packb({**header, "rid": "r" * 200}), *rest],
        lambda k: [msgpack.packb({**header, "rid": rid(k)}), *rest, b"extra frame"],
        lambda k: [msgpack.packb([1, 2, 3])],
        lambda k: [msgpack.packb({**header, "rid": rid(k), "ts": float("nan")}), *rest],
        lambda k: [msgpack.packb({**header, "rid": rid(k)}) + b"\x00trailing", *rest],
        lambda k: [bytes(f) for f in framing.encode(Error(rid=rid(k), stage="x", message="y" * 16_000))],
    ]
    if router:  # requests that decode but the coordinator refuses (never admitted: no synthesis starts)
        makers += [
            lambda k: [msgpack.packb({**header, "rid": rid(k), "params": {"temperature": -float(k + 1)}})],
            lambda k: [msgpack.packb({**header, "rid": rid(k), "text": " " * int(rng.integers(1, 9))})],
            lambda k: [msgpack.packb({**header, "rid": rid(k), "params": {"nope" * 999: 1}})],
            lambda k: [msgpack.packb({**header, "rid": f"bad id {k}!"})],
            lambda k: [bytes(f) for f in framing.encode(Cancel(rid=rid(k)))],
            lambda k: [msgpack.packb({**header, "rid": rid(k), "text": "x" * 1_500_000})],  # header over its limit
        ]
    else:  # stages: a frame far over any header, well-formed messages of kinds the stage does not take
        makers += [
            lambda k: [rng.bytes(3 << 20)] if k % 50 == 0 else [rng.bytes(8)],
            lambda k: [bytes(f) for f in framing.encode(End(rid=rid(k), totals={"tokens": 3}))],
            lambda k: [bytes(f) for f in framing.encode(Welcome(rid="*"))],
        ]
    return [makers[int(rng.integers(len(makers)))](k) for k in range(n)]


def test_malformed_messages_get_replies_and_kill_nothing(tts, sockets):
    d = dealer(sockets, tts)
    garbage = malformed(MALFORMED, 1, "request", router=True)
    for start in range(0, MALFORMED, BATCH):  # every one gets exactly one error reply, within the wire's limits
        batch = garbage[start:start + BATCH]
        for frames in batch:
            d.send_multipart(frames)
        for frames in batch:
            err = reply_to(d)
            assert isinstance(err, Error) and len(err.message) <= ERROR_TEXT_CHARS
    assert not d.poll(200), "more replies than messages"

    sup = tts.supervisor
    for stage, kind, seed in (("t3", "request", 2), ("cfm", "tokens", 3), ("hifigan", "mel", 4)):
        # A running victim, then the garbage and a duplicate of the victim's id on the same socket: when the
        # victim's error arrives, the stage has read (and survived) every garbage message before it.
        victim = tts.submit("Keep going.", seed=seed, ignore_eos=True, max_new_tokens=LONG, **FAST)
        chunks = victim.chunks()
        next(chunks)
        push = sockets.socket("PUSH", sup.endpoint(stage), bind=False, SNDTIMEO=TIMEOUT_MS)
        for frames in malformed(MALFORMED, seed, kind):
            push.send_multipart(frames)
        framing.send(push, Request(rid=victim.rid, text="Again.", params={"seed": 1}))
        with pytest.raises(Exception, match="already in flight"):
            for _ in chunks:
                pass
        assert all(p.is_alive() for p in sup.processes.values()), f"a stage died of garbage sent to {stage}"
    assert tts.synthesize("Still standing.", seed=6, ignore_eos=True, max_new_tokens=7, **FAST).size == 960 * 7


def test_cancels_under_load_cut_work_and_leave_the_others_bit_identical(tts):
    """16 requests at once (8 in T3's slots, 8 queued), 4 of them long ones cancelled after their first audio."""
    cancelled = {2, 5, 9, 13}
    jobs = {i: dict(seed=100 + i, ignore_eos=True, max_new_tokens=LONG if i in cancelled else 10 + i % 5, **FAST)
            for i in range(16)}
    handles = {i: tts.submit(f"Request number {i}.", **p) for i, p in jobs.items()}
    audio, ends, after_cancel = {}, {}, {}

    def consume(i):
        h, got, n_after = handles[i], [], None
        for chunk in h.chunks():
            got.append(chunk.pcm)
            if n_after is not None:
                n_after += chunk.pcm.size
            if i in cancelled and n_after is None:
                tts.coordinator.cancel(h.rid)  # after the first audio; the chunks keep coming until the end
                n_after = 0
        audio[i], ends[i], after_cancel[i] = np.concatenate(got), h.end, n_after

    threads = [threading.Thread(target=consume, args=(i,)) for i in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(ends) == len(handles)
    for i in cancelled:
        assert ends[i].reason == "cancelled" and ends[i].totals["samples"] == audio[i].size
        # what was already computed or in flight when the cancel came; the rest of the 1400 tokens never ran
        assert after_cancel[i] <= 960 * 3 * MAX_HOP_TOKENS, (i, after_cancel[i])
    for i in set(handles) - cancelled:
        assert ends[i].reason == "length" and audio[i].size == 960 * jobs[i]["max_new_tokens"]
        solo = tts.synthesize(f"Request number {i}.", **jobs[i])
        assert audio[i].tobytes() == solo.tobytes(), f"request {i} differs from its solo run"
    assert tts.coordinator.held() == 0


def test_replays_are_bounded_and_the_publisher_queue_is_bounded(tts, sockets):
    from pipeline.coordinator import MAX_REPLAYS, PUB_HWM

    assert tts.coordinator.pub.getsockopt(zmq.SNDHWM) == PUB_HWM
    handle = tts.submit("Replay me.", rid="replayed", seed=8, ignore_eos=True, max_new_tokens=9, **FAST)
    n = len(list(handle.chunks())) + 1  # its audio chunks and its end
    sub = sockets.socket("SUB", tts.endpoints["pub"], RCVTIMEO=TIMEOUT_MS)
    counts = {"welcome": 0, "replayed": 0}
    for _ in range(MAX_REPLAYS + 2):  # the same subscription again and again: each gets a welcome, replays stop
        sub.setsockopt(zmq.SUBSCRIBE, topic("replayed"))
        while True:
            _, msg = framing.recv_published(sub)
            if isinstance(msg, Welcome):
                counts["welcome"] += 1
                break
            counts["replayed"] += 1
    sub.setsockopt(zmq.RCVTIMEO, 300)
    with pytest.raises(zmq.Again):
        while True:
            framing.recv_published(sub)
            counts["replayed"] += 1
    assert counts == {"welcome": MAX_REPLAYS + 2, "replayed": MAX_REPLAYS * n}
