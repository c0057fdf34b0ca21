"""The T3 worker in-process (no sockets): cheap handle(), admission between ticks, cancels, duplicates, limits."""
from __future__ import annotations

import numpy as np
import pytest

from ipc.schema import Cancel, End, Error, Request, Tokens
from pipeline.models import ModelSpec
from stages.t3.part import load_t3_part
from stages.t3.worker import T3Worker


@pytest.fixture(scope="module")
def part():
    return load_t3_part(ModelSpec(), max_slots=3)


@pytest.fixture()
def worker(part, one_thread):
    w = T3Worker(part, max_inflight=3, max_queue=2)
    yield w
    w.close()


def req(rid, n=6, text="Hello there.", **params):
    return Request(rid=rid, text=text, params={"seed": 5, "ignore_eos": True, "max_new_tokens": n, **params})


def drain(worker, out=None):
    out = list(out or [])
    while worker.busy():
        out += worker.work()
    return out


def by_rid(msgs):
    got = {}
    for m in msgs:
        got.setdefault(m.rid, []).append(m)
    return got


def test_handle_only_queues_and_work_admits_then_ticks(worker):
    assert worker.handle(req("a")) == [] and worker.busy() and worker.batch.active == 0
    first = worker.work()
    assert [type(m) for m in first] == [Request, Tokens, Tokens]  # forwarded, its first draw, then one tick
    assert first[0].params["seed"] == 5 and first[0].text == ""
    msgs = by_rid(drain(worker, first))["a"]
    toks = [m for m in msgs if isinstance(m, Tokens)]
    assert [m.start for m in toks] == list(range(6)) and isinstance(msgs[-1], End)
    assert msgs[-1].totals == {"tokens": 6} and msgs[-1].reason == "length"
    assert [m.seq for m in msgs] == list(range(len(msgs)))
    assert len(worker.table) == 0 and not worker.busy()


def test_many_requests_share_ticks_and_each_gets_its_solo_tokens(worker):
    solo = {}
    for i in range(5):
        worker.handle(req(f"s{i}", n=5 + i, seed=100 + i))
        solo[f"s{i}"] = [int(m.ids[0]) for m in drain(worker) if isinstance(m, Tokens)]
    for i in range(5):  # 5 requests for 3 slots: two wait, join as others finish
        worker.handle(req(f"b{i}", n=5 + i, seed=100 + i))
    got = by_rid(drain(worker))
    for i in range(5):
        assert [int(m.ids[0]) for m in got[f"b{i}"] if isinstance(m, Tokens)] == solo[f"s{i}"]
        assert isinstance(got[f"b{i}"][-1], End)


def test_cancel_of_a_queued_or_active_request_frees_it_at_once(worker):
    for rid in ("x", "y", "z", "q"):  # q waits: 3 slots
        worker.handle(req(rid, n=40))
    worker.work()
    assert worker.batch.active == 3 and list(worker.waiting) == ["q"]
    out = worker.handle(Cancel(rid="q"))
    assert [type(m) for m in out] == [Cancel] and "q" not in worker.table and not worker.waiting
    out = worker.handle(Cancel(rid="y"))
    assert [type(m) for m in out] == [Cancel] and "y" not in worker.table
    assert worker.batch.free_slots == 1  # before the next tick
    later = drain(worker)
    assert {"q", "y"}.isdisjoint(m.rid for m in later)


def test_cancel_and_error_for_unknown_ids_are_forwarded(worker):
    assert [type(m) for m in worker.handle(Cancel(rid="nobody"))] == [Cancel]
    out = worker.handle(Error(rid="nobody2", stage="coordinator", message="x"))
    assert isinstance(out[0], Error) and out[0].rid == "nobody2"
    assert worker.handle(Tokens(rid="zz", start=0, ids=np.array([1]))) == []  # not T3's kind: ignored


def test_duplicate_id_fails_that_id_and_the_stage_carries_on(worker):
    worker.handle(req("dup", n=20))
    worker.work()
    out = worker.handle(req("dup", n=20))
    assert len(out) == 1 and isinstance(out[0], Error) and "already in flight" in out[0].message
    assert "dup" not in worker.table and worker.batch.active == 0
    worker.handle(req("fine", n=3))
    assert isinstance(drain(worker)[-1], End)


def test_bad_requests_fail_alone(worker):
    cases = {"v": req("v", voice="alice"), "t": req("t", temperature=-1.0), "e": req("e", text="  "),
             "n": req("n", n=10**6), "u": req("u", bogus=1), "w": req("w", voice=3)}
    for rid, r in cases.items():
        out = worker.handle(r)
        assert len(out) == 1 and isinstance(out[0], Error) and out[0].stage == "t3", rid
    assert "unknown voice 'alice'" in worker.handle(req("v2", voice="alice"))[0].message
    assert len(worker.table) == 0
    worker.handle(req("ok", n=2, voice="default"))
    assert isinstance(drain(worker)[-1], End)


def test_waiting_queue_bound_fails_loudly_past_the_admission_limit(worker):
    n = worker.max_inflight + worker.max_waiting  # what T3 can hold without work() running
    outs = [worker.handle(req(f"f{i}", n=2)) for i in range(n + 1)]
    assert all(o == [] for o in outs[:worker.max_waiting])  # queued (the coordinator admits at most 3 + 2)
    rejected = [o[0] for o in outs if o]
    assert rejected and all(isinstance(m, Error) and "bypassed" in m.message for m in rejected)
    ends = [m for m in drain(worker) if isinstance(m, End)]
    assert len(ends) == worker.max_waiting


def test_admission_is_budgeted_but_always_progresses(worker, monkeypatch):
    import stages.t3.worker as w

    monkeypatch.setattr(w, "ADMIT_ROWS_BUDGET", 1)  # smaller than any request: one admission per unit of work
    for i in range(3):
        worker.handle(req(f"g{i}", n=30))
    worker.work()
    assert worker.batch.active == 1 and len(worker.waiting) == 2
    worker.work()
    assert worker.batch.active == 2
