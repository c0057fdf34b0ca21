"""First chunks first: in CFM and HiFiGAN a request's first chunk overtakes later chunks of other requests, a request's
own chunks never change order, and the age bound keeps a flood of new requests from starving a running one."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ipc.schema import Audio, End, Mel, Tokens
from stages.cfm.worker import FLOW_LIMITS, CFMWorker
from stages.common.lanes import BUCKETS_PER_OCTAVE, Lane, bucket
from stages.hifigan.worker import VOCODER_LIMITS, HiFiGANWorker
from tests.chain import drain, mel_messages, token_messages

ONE_AT_A_TIME = {"max_jobs": 1}  # capacity for one job per call: the service order decides everything


def test_buckets_are_few_and_waste_little():
    sizes = range(1, 2000)
    for n in sizes:
        b = bucket(n, 16)
        assert n <= b <= max(n + 15, n * (1 + 1 / BUCKETS_PER_OCTAVE))
        assert bucket(b, 16) == b  # a bucket is its own bucket
    assert len({bucket(n, 16) for n in sizes}) <= 40
    assert [bucket(n, 16) for n in (1, 16, 17, 100, 108, 228, 234, 300)] == [16, 16, 32, 112, 112, 256, 256, 320]


def test_lane_order():
    first, older_first = Lane(order=2, since=0), Lane(order=3, since=-9)
    later, old = Lane(order=0, first=False, since=5), Lane(order=1, first=False, since=1)
    lanes = sorted([later, first, old, older_first], key=lambda lane: lane.key(tick=6, age_limit=5))
    assert lanes == [old, older_first, first, later]  # old waited 5 units: ahead of every first chunk


def cfm_worker(part):
    return CFMWorker(part, limits=dataclasses.replace(FLOW_LIMITS, **ONE_AT_A_TIME))


@pytest.fixture(scope="module")
def workers(engine):
    cfm = cfm_worker(engine.cfm)
    voc = HiFiGANWorker(engine.hift, limits=dataclasses.replace(VOCODER_LIMITS, **ONE_AT_A_TIME))
    return cfm, voc


def order_of(out, kind):
    return [(m.rid, m.start) for m in out if isinstance(m, kind)]


def test_cfm_first_chunk_goes_ahead_of_later_chunks(workers):
    cfm, _ = workers
    out = []
    for m in token_messages("a", 30, 1, step=30, n_timesteps=2, first_chunk_tokens=4):  # a's chunks: all queued
        out += cfm.handle(m)
    out += cfm.work()  # a's first chunk is under way
    for m in token_messages("b", 7, 2, step=7, n_timesteps=2):  # b's first chunk arrives
        out += cfm.handle(m)
    out += drain(cfm)
    order = order_of(out, Mel)
    a_chunks = [s for r, s in order if r == "a"]
    assert a_chunks == sorted(a_chunks) and len(a_chunks) >= 3  # a's own order kept
    assert order.index(("b", 0)) == 1  # b's first chunk right after a's first, ahead of a's later ones
    assert [m.rid for m in out if isinstance(m, End)] == ["b", "a"]


def test_hifigan_first_chunk_goes_ahead_of_later_chunks(workers, engine):
    _, voc = workers
    mel = np.full((80, 200), -4.0, np.float32)
    out = []
    for m in mel_messages("a", mel, [40] * 5, 1):
        out += voc.handle(m)
    out += voc.work()
    for m in mel_messages("b", mel[:, :40], [40], 2):
        out += voc.handle(m)
    out += drain(voc)
    order = order_of(out, Audio)
    a_chunks = [s for r, s in order if r == "a"]
    assert a_chunks == sorted(a_chunks) and len(a_chunks) >= 4
    assert order.index(("b", 0)) == 1


def test_age_bound_keeps_a_running_request_from_starving(engine):
    """One call at a time and a new request's first chunk before every call: the running request still gets a chunk
    out at least every age_limit + 1 calls."""
    limits = dataclasses.replace(VOCODER_LIMITS, max_jobs=1, age_limit=3)
    voc = HiFiGANWorker(engine.hift, limits=limits)
    mel = np.full((80, 400), -4.0, np.float32)
    for m in mel_messages("long", mel, [30] * 13 + [10], 1):
        voc.handle(m)
    served = []
    for k in range(40):
        for m in mel_messages(f"new{k}", mel[:, :30], [30], 100 + k):
            voc.handle(m)
        served.append({m.rid for m in voc.work() if isinstance(m, Audio)})
    calls_with_long = [i for i, rids in enumerate(served) if "long" in rids]
    gaps = np.diff([-1] + calls_with_long)
    assert len(calls_with_long) >= 8 and gaps.max() <= limits.age_limit + 1, gaps
    assert any(rid.startswith("new") for rids in served for rid in rids)  # first chunks were served in between
    drain(voc)
    assert len(voc.table) == 0


def test_a_request_alone_is_never_held_back(engine):
    """With one request every chunk goes out as soon as its lookahead has arrived."""
    cfm = cfm_worker(engine.cfm)
    when = []  # (tokens handled so far, mel start)
    for m in token_messages("solo", 12, 5, step=1, n_timesteps=1):
        out = cfm.handle(m) + drain(cfm)
        got = m.start + len(m.ids) if isinstance(m, Tokens) else m.KIND
        when += [(got, x.start) for x in out if isinstance(x, Mel)]
    assert when == [(7, 0), ("end", 8)]  # chunk 0 (tokens 0-3) once token 6 arrived; the rest at the end
    assert len(cfm.table) == 0
