"""One admission limit: at most max_inflight + max_queue requests are held; past that an immediate "server busy"
error before `accepted`; every admitted request completes (no stage refuses it); the next request succeeds."""
from __future__ import annotations

import re
import threading

import pytest

from ipc import framing
from ipc.schema import Accepted, Error, Request
from ipc.sockets import SocketFactory
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
