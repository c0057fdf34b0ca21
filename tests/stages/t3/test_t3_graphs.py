"""The captured T3 tick's bucket logic on CPU: the padded-bucket step (what each CUDA graph records, run eagerly)
gives exactly the plain tick's tokens and logits, with requests joining and leaving; graphs are CUDA-only."""
from __future__ import annotations

import random

import pytest
import torch

from stages.t3.conds import builtin_t3_conditionals
from stages.t3.generate import admission, new_t3_batch
from stages.t3.graphs import TickGraphs, attach_tick_graphs, bucket_sizes, graphs_wanted, pick_bucket, span_sizes
from stages.t3.sampling import SamplingParams


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Bit-identity across row counts is a property of 1-thread CPU kernels (docs/t3.md)."""


def test_buckets_spans_and_selection():
    assert bucket_sizes(64) == (1, 2, 4, 8, 16, 32, 64)
    assert bucket_sizes(5) == (1, 2, 4, 5) and bucket_sizes(1) == (1,)
    assert bucket_sizes(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert span_sizes(1536) == (64, 128, 256, 512, 1024, 1536) and span_sizes(160) == (64, 128, 160)
    assert [pick_bucket(n, (1, 2, 4, 8)) for n in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, None]
    with pytest.raises(ValueError, match="buckets"):
        bucket_sizes(4, (0, 2))


def test_graphs_are_selected_only_on_cuda():
    assert graphs_wanted("cpu") is False and graphs_wanted("cpu", False) is False
    assert graphs_wanted("cuda") is True and graphs_wanted("cuda:1", None) is True and graphs_wanted("cuda", False) is False
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        graphs_wanted("cpu", True)


def test_cpu_stage_part_keeps_the_eager_tick():
    from stages.common.spec import ModelSpec
    from stages.t3.part import load_t3_part

    part = load_t3_part(ModelSpec(), max_slots=2)
    assert part.batch.graphs is None


def drive(batch, schedule, conds, cancel=None):
    """schedule [(tick, rid, text, params)], cancel {rid: tick} -> ({rid: tokens}, {rid: [logits]}, buckets used)."""
    tokens, logits, used = {}, {}, []
    pending, cancel, t = sorted(schedule, key=lambda s: s[0]), dict(cancel or {}), 0
    while pending or batch.active:
        for rid, at in list(cancel.items()):
            if t >= at and rid in batch:  # the first tick from `at` on where it is active
                assert batch.cancel(rid)
                del cancel[rid]
        now = [s for s in pending if s[0] <= t]
        pending = [s for s in pending if s[0] > t]
        if now:
            for e in batch.admit([admission(batch, rid, text, conds, p) for _, rid, text, p in now]):
                if e.token is not None:
                    tokens.setdefault(e.rid, []).append(e.token)
        if batch.active:
            before = set(batch.graphs.replays.items()) if batch.graphs else set()
            rids = [a.rid for a in batch.slots]
            events = batch.tick()
            for i, rid in enumerate(rids[:len(batch.logits)] if batch.logits is not None else []):
                logits.setdefault(rid, []).append(batch.logits[i].clone())
            if batch.graphs:
                used += [k for k, _ in set(batch.graphs.replays.items()) - before]
            for e in events:
                assert e.error is None, e.error
                if e.token is not None:
                    tokens.setdefault(e.rid, []).append(e.token)
        t += 1
    return tokens, logits, used


def requests(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = SamplingParams(seed=500 + i, max_new_tokens=rng.randint(6, 14), ignore_eos=i % 2 == 0,
                           top_p=rng.choice([1.0, 0.9]), min_p=rng.choice([0.0, 0.05]),
                           repetition_penalty=rng.choice([1.0, 1.3]), cfg_weight=rng.choice([0.0, 0.5]))
        out.append((rng.randint(0, 10), f"r{i}", [rng.randrange(3, 700) for _ in range(rng.randint(3, 20))], p))
    return out


def test_padded_bucket_step_equals_the_plain_tick(tiny_model, tiny_cfg):
    conds = builtin_t3_conditionals(tiny_cfg)
    schedule = requests(6, seed=2)  # up to 6 at once: buckets 1, 2, 4 and 6 (max_slots) over joins and leaves
    plain = new_t3_batch(tiny_model, tiny_cfg, max_slots=6, max_len=160)
    ref_tokens, ref_logits, _ = drive(plain, schedule, conds, cancel={"r3": 5})
    padded = new_t3_batch(tiny_model, tiny_cfg, max_slots=6, max_len=160)
    graphs = attach_tick_graphs(padded, capture=False)
    assert isinstance(graphs, TickGraphs) and padded.graphs is graphs and graphs.buckets == (1, 2, 4, 6)
    tokens, logits, used = drive(padded, schedule, conds, cancel={"r3": 5})
    assert tokens == ref_tokens
    for rid in ref_logits:  # every draw's logits, bit for bit
        assert all(torch.equal(a, b) for a, b in zip(logits[rid], ref_logits[rid], strict=True)), rid
    assert {b for b, _ in used} >= {1, 2, 4} and {s for _, s in used} >= {64, 128}
    assert len(tokens["r3"]) < schedule[3][3].max_new_tokens  # the cancel cut it short
    assert padded.active == 0


def test_a_span_without_a_graph_falls_back_to_the_eager_tick(tiny_model, tiny_cfg):
    conds = builtin_t3_conditionals(tiny_cfg)
    schedule = [(0, "a", [5, 6, 7], SamplingParams(seed=3, max_new_tokens=40, ignore_eos=True))]
    ref = drive(new_t3_batch(tiny_model, tiny_cfg, max_slots=2, max_len=160), schedule, conds)[0]
    batch = new_t3_batch(tiny_model, tiny_cfg, max_slots=2, max_len=160)
    graphs = attach_tick_graphs(batch, spans=(64,), capture=False)  # spans 128+ run eagerly
    tokens, _, used = drive(batch, schedule, conds)
    assert tokens == ref and {s for _, s in used} == {64}
    assert sum(graphs.replays.values()) < 40 - 1  # some ticks were eager
    with pytest.raises(ValueError, match="spans"):
        TickGraphs(batch, spans=(100,))
