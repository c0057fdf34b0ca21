"""One admission limit: at most max_inflight + max_queue requests are held; past that an immediate "server busy"
error before `accepted`; every admitted request completes (no stage refuses it); the next request succeeds."""
from __future__ import annotations

import re
import threading

import pytest

from ipc import framing
from ipc.schema import Accepted, Error, Request
from ipc.sockets import HWM_PIPELINE, SocketFactory
from pipeline.api import Pipeline
from pipeline.coordinator import ServerBusy
from pipeline.http.backend import error_kind, is_busy
from pipeline.launcher import PipelineConfig
from pipeline.models import ModelSpec
from stages.common.chain import stage_capacity

from .conftest import FAST

MAX_INFLIGHT, MAX_QUEUE = 4, 16
FLOOD = 100  # requests submitted at once
BUSY = re.compile(rf"^server busy: {MAX_INFLIGHT} active, {MAX_QUEUE} queued\b")
REPLY_TIMEOUT_MS = 30_000
LONE_QUEUE = 98  # a limit of 100 requests: with their cancels, more than ZeroMQ queues for a peer that is not there


@pytest.fixture(scope="module")
def tts():
    with Pipeline(PipelineConfig(model=ModelSpec(), threads=1, max_inflight=MAX_INFLIGHT, max_queue=MAX_QUEUE)) as p:
        yield p


def tokens(i: int) -> int:
    return 6 + i % 7  # different lengths, so requests leave T3 at different ticks


def test_a_flood_gets_busy_for_exactly_the_excess_and_every_admitted_request_completes(tts):
    handles, busy = {}, []
    for i in range(FLOOD):
        try:
            handles[i] = tts.submit("Admit me.", seed=i, ignore_eos=True, max_new_tokens=tokens(i), **FAST)
        except ServerBusy as e:
            busy.append(str(e))
    with tts.coordinator.lock:
        ended_meanwhile = len(tts.coordinator.finished)  # each request that ended during the loop freed one place
    limit = MAX_INFLIGHT + MAX_QUEUE
    assert limit <= len(handles) <= limit + ended_meanwhile
    assert len(busy) == FLOOD - len(handles)
    assert all(BUSY.match(m) for m in busy), busy[:3]  # refused only while the limit was full, with the counts
    assert is_busy(busy[0]) and error_kind(ServerBusy(busy[0])) == "busy"  # HTTP answers 503 + Retry-After

    results, errors = {}, {}

    def consume(i, handle):
        try:
            results[i] = sum(c.pcm.size for c in handle.chunks())
        except Exception as e:  # noqa: BLE001  (a failure inside a stage is what the test looks for)
            errors[i] = e

    threads = [threading.Thread(target=consume, args=item) for item in handles.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == {}, f"admitted requests failed inside a stage: {list(errors.values())[:2]}"
    assert results == {i: 960 * tokens(i) for i in handles}
    assert tts.coordinator.held() == 0
    assert tts.synthesize("The next one.", seed=7, ignore_eos=True, max_new_tokens=5, **FAST).size == 960 * 5


def test_a_remote_request_past_the_limit_gets_busy_instead_of_accepted(tts):
    held = [tts.submit("Hold a place.", seed=i, ignore_eos=True, max_new_tokens=200, **FAST)
            for i in range(MAX_INFLIGHT + MAX_QUEUE)]
    try:
        with SocketFactory() as sockets:
            dealer = sockets.socket("DEALER", tts.endpoints["requests"])
            framing.send(dealer, Request(rid="one-too-many", text="Me too.", params={"seed": 1}))
            assert dealer.poll(REPLY_TIMEOUT_MS)
            reply = framing.recv(dealer)
            assert isinstance(reply, Error) and reply.rid == "one-too-many" and BUSY.match(reply.message)
            for h in held:  # free the places: the cancels travel the stages and come back as `end` cancelled
                tts.coordinator.cancel(h.rid)
            for h in held:
                assert sum(c.pcm.size for c in h.chunks()) < 960 * 200 and h.end.reason == "cancelled"
            framing.send(dealer, Request(rid="now-fits", text="Me too.", params={"seed": 1, "max_new_tokens": 3,
                                                                                 "ignore_eos": True, **FAST}))
            assert dealer.poll(REPLY_TIMEOUT_MS)
            assert isinstance(framing.recv(dealer), Accepted)
    finally:
        for h in held:
            tts.coordinator.cancel(h.rid)


def test_every_stage_bound_is_derived_from_the_admission_limits():
    from stages.t3.worker import DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_QUEUE

    config = PipelineConfig(max_inflight=3, max_queue=5)
    assert stage_capacity({"max_inflight": config.max_inflight, "max_queue": config.max_queue}) == 8
    assert (DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_QUEUE) == (PipelineConfig().max_inflight, PipelineConfig().max_queue)


@pytest.fixture
def lone_coordinator():
    """A coordinator with no stages behind it: T3's socket has no peer, so nothing sent to T3 is ever taken."""
    from ipc.endpoints import Endpoints
    from pipeline.coordinator import Coordinator

    eps = Endpoints("ipc")
    with SocketFactory(eps, linger_ms=0) as sockets:
        coordinator = Coordinator(sockets, eps, max_inflight=2, max_queue=LONE_QUEUE)
        coordinator.start()
        try:
            yield coordinator
        finally:
            coordinator.stop()


def test_the_limit_is_exact_and_the_coordinator_never_blocks_on_a_stage_that_takes_nothing(lone_coordinator):
    """T3 takes nothing (as when it died): requests and cancels wait in the outbox, replies still come at once."""
    from ipc.schema import Cancel

    with SocketFactory(linger_ms=0) as sockets:
        d = sockets.socket("DEALER", lone_coordinator.endpoints["requests"])
        def reply():
            assert d.poll(REPLY_TIMEOUT_MS), "the coordinator stopped answering"
            return framing.recv(d)

        limit = 2 + LONE_QUEUE
        for i in range(limit + 3):
            framing.send(d, Request(rid=f"r{i}", text="Wait.", params={"seed": i}))
            framing.send(d, Cancel(rid=f"r{i}"))  # taken without a reply while r{i} is held
            first = reply()
            if i < limit:
                assert isinstance(first, Accepted) and first.rid == f"r{i}"
            else:  # refused before `accepted`; so the cancel is of an id the server does not know
                assert isinstance(first, Error) and first.message.startswith(f"server busy: 2 active, {LONE_QUEUE} queued")
                second = reply()
                assert isinstance(second, Error) and "not a request of this server" in second.message
        assert lone_coordinator.held() == limit  # cancels free nothing until they have come back through the stages
        with pytest.raises(ServerBusy, match=f"server busy: 2 active, {LONE_QUEUE} queued"):
            lone_coordinator.submit("In-process too.", {"seed": 1})
        # ZeroMQ queues up to its high-water mark for the absent peer; the rest waits in the outbox, in order
        assert len(lone_coordinator.outbox) >= 2 * limit - 2 * HWM_PIPELINE
