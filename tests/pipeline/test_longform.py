"""Front-end long-form synthesis: the runner's order, window and submission rule (a fake backend); its stitched
stream in one process equals the coordinator's one request on the real pipeline."""
import threading

import numpy as np
import pytest
import torch

from pipeline.longform import (EngineBackend, Finished, PipelineBackend, Runner, Silence, Unit, plan_text, stream_plan,
                               synthesize_long)
from pipeline.models import ModelSpec

from .conftest import FAST

WAIT_S = 30  # a deadline on every handshake of the fake backend: a broken runner fails instead of hanging


class FakeBackend:
    """Each request emits `chunks` chunks filled with its unit number; logs (event, unit) in the order they happen."""

    max_window = None

    def __init__(self, chunks=3, hold=None):
        self.chunks, self.hold = chunks, hold or {}
        self.log, self.lock = [], threading.Lock()
        self.running = self.peak = 0

    def note(self, what, k):
        with self.lock:
            self.log.append((what, k))

    def run(self, text, params, emit):
        k = params["k"]
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.note("start", k)
        try:
            for i in range(self.chunks):
                if i == 1 and k in self.hold:  # hold the rest until another request has ended
                    assert self.hold[k].wait(WAIT_S)
                emit(np.full(10, k, np.float32))
                self.note("chunk", k)
            if params.get("fail"):
                raise RuntimeError(f"request {k} failed")
            return {"k": k}
        finally:
            with self.lock:
                self.running -= 1
            self.note("end", k)


def units(n, pause=5, extra=None):
    extra = extra or {}
    return [Unit(0, k, n, f"text {k}", {"k": k, **extra.get(k, {})}, pause if k else 0) for k in range(n)]


def run(backend, us, window=4, close=True):
    r = Runner(backend, window)
    for u in us:
        r.add(u)
    if close:
        r.close_input()
    return r, r.results()


def test_audio_comes_out_in_order_with_exact_pauses_even_when_later_requests_finish_first():
    ended_1 = threading.Event()
    backend = FakeBackend(hold={0: ended_1})
    original = backend.run

    def run_and_signal(text, params, emit):
        try:
            return original(text, params, emit)
        finally:
            if params["k"] == 1:
                ended_1.set()

    backend.run = run_and_signal
    _, items = run(backend, units(3), window=2)
    items = list(items)
    stream = np.concatenate([np.zeros(i.samples) if isinstance(i, Silence) else i.pcm for i in items if not isinstance(i, Finished)])
    expected = np.concatenate([np.zeros(0), np.full(30, 0.0), np.zeros(5), np.full(30, 1.0), np.zeros(5), np.full(30, 2.0)])
    assert np.array_equal(stream, expected)
    assert [i.unit.index for i in items if isinstance(i, Finished)] == [0, 1, 2]
    assert backend.log.index(("end", 1)) < backend.log.index(("end", 0))  # 1 really finished first
    assert backend.peak == 2


def test_the_next_request_starts_only_after_the_newest_one_streams_and_the_window_caps_them():
    backend = FakeBackend(chunks=2)
    _, items = run(backend, units(6), window=3)
    list(items)
    log = backend.log
    for k in range(1, 6):
        assert log.index(("chunk", k - 1)) < log.index(("start", k))
    assert backend.peak <= 3


def test_window_one_runs_one_after_another():
    backend = FakeBackend()
    _, items = run(backend, units(4), window=1)
    list(items)
    assert backend.peak == 1
    for k in range(1, 4):
        assert backend.log.index(("end", k - 1)) < backend.log.index(("start", k))


def test_a_failed_request_raises_and_an_input_error_comes_after_the_earlier_audio():
    _, items = run(FakeBackend(), units(3, extra={1: {"fail": True}}))
    with pytest.raises(RuntimeError, match="request 1 failed"):
        list(items)
    r, items = run(FakeBackend(), units(2), close=False)
    r.close_input(ValueError("line 3 is bad"))
    seen = []
    with pytest.raises(ValueError, match="line 3 is bad"):
        for i in items:
            seen.append(i)
    assert [i.unit.index for i in seen if isinstance(i, Finished)] == [0, 1]


def test_units_added_later_are_run_as_they_come():
    backend = FakeBackend(chunks=1)
    r, items = run(backend, units(1), close=False)
    first = next(items)
    assert first.unit.index == 0
    assert isinstance(next(items), Finished)
    r.add(Unit(1, 0, 1, "later", {"k": 7}, pause_before=3))
    r.close_input()
    rest = list(items)
    assert isinstance(rest[0], Silence) and rest[0].samples == 3 and rest[1].pcm[0] == 7


def test_bad_window():
    with pytest.raises(ValueError, match="window"):
        Runner(FakeBackend(), 0)


# --- the real pipeline (built-in tiny model; the coordinator's long-form path: test_longform_coord.py) ----


def test_same_seed_same_audio_in_one_process_and_three(tts):
    text = "One sentence here, and a clause. Then another one. And a third sentence, a longer one with more words."
    params = {"seed": 21, "ignore_eos": True, "max_new_tokens": 6, **FAST}
    plan = plan_text(ModelSpec(), text, params, sentence_silence=0.05)
    assert len(plan.segments) >= 3
    from pipeline.sequential import Engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the stage processes run 1 thread each
    try:
        seq = np.concatenate([c.pcm for c in stream_plan(EngineBackend(Engine(ModelSpec())), plan)])
    finally:
        torch.set_num_threads(threads)  # later test modules compute in this process with its own thread count
    mp = synthesize_long(tts, text, sentence_silence=0.05, **params)  # one request, segmented by the coordinator
    assert mp.size == plan.exact_samples and mp.tobytes() == seq.tobytes()
    front = np.concatenate([c.pcm for c in stream_plan(PipelineBackend(tts), plan)])  # segments as separate requests
    assert front.tobytes() == mp.tobytes()
