"""CUDA graphs of the T3 tick on a GPU: replay equals the uncaptured step (tokens and logits bit for bit) and the
plain eager tick (tokens), through every batch bucket 1..64 and every span, with requests joining and leaving."""
from __future__ import annotations

import random

import pytest
import torch

from stages.t3.checkpoint import build_builtin_t3
from stages.t3.conds import builtin_t3_conditionals
from stages.t3.config import T3Config
from stages.t3.generate import admission, new_t3_batch
from stages.t3.graphs import DEFAULT_BUCKETS, attach_tick_graphs
from stages.t3.sampling import SamplingParams
from tests.gpu.cuda import GPU

pytestmark = GPU
MAX_LEN = 256  # spans 64, 128, 256 at tiny: long requests cross all three


@pytest.fixture(scope="module")
def tiny():
    cfg = T3Config.from_name("tiny")
    return cfg, build_builtin_t3(cfg), builtin_t3_conditionals(cfg)


def ramp(n=64, seed=0):
    """n requests joining one or two per tick (the batch passes through every bucket up to n), leaving at their own
    lengths; a few run long enough to reach every span."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = SamplingParams(seed=900 + i, max_new_tokens=rng.randint(20, 60) if i % 9 else 150, ignore_eos=True,
                           top_p=rng.choice([1.0, 0.9]), min_p=rng.choice([0.0, 0.05]),
                           repetition_penalty=rng.choice([1.0, 1.2]), cfg_weight=rng.choice([0.0, 0.5]))
        out.append((i // 2, f"r{i}", [rng.randrange(3, 700) for _ in range(rng.randint(3, 12))], p))
    return out


def drive(batch, schedule, conds, cancel=()):
    tokens, logits = {}, {}
    pending, cancel, t = list(schedule), set(cancel), 0
    while pending or batch.active:
        for rid in [r for r in cancel if r in batch and t % 7 == 6]:
            batch.cancel(rid)
            cancel.discard(rid)
        now = [s for s in pending if s[0] <= t]
        pending = [s for s in pending if s[0] > t]
        events = batch.admit([admission(batch, rid, text, conds, p) for _, rid, text, p in now]) if now else []
        if batch.active:
            rids = [a.rid for a in batch.slots]
            events += batch.tick()
            for i, rid in enumerate(rids[:len(batch.logits)]):
                logits.setdefault(rid, []).append(batch.logits[i].clone())
        for e in events:
            assert e.error is None, e.error
            if e.token is not None:
                tokens.setdefault(e.rid, []).append(e.token)
        t += 1
    return tokens, logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_replay_equals_the_uncaptured_step_through_every_bucket(tiny, dtype):
    cfg, model, conds = tiny
    schedule = ramp()
    cancel = {"r5", "r30", "r47"}  # leave mid-stream while graphs replay
    ref_batch = new_t3_batch(model, cfg, max_slots=64, max_len=MAX_LEN, device="cuda", dtype=dtype)
    attach_tick_graphs(ref_batch, capture=False)
    ref_tokens, ref_logits = drive(ref_batch, schedule, conds, cancel)
    batch = new_t3_batch(model, cfg, max_slots=64, max_len=MAX_LEN, device="cuda", dtype=dtype)
    graphs = attach_tick_graphs(batch)
    assert graphs is not None and all(g.graph is not None for g in graphs.steps.values())
    tokens, logits = drive(batch, schedule, conds, cancel)
    assert tokens == ref_tokens
    for rid in ref_logits:
        assert all(torch.equal(a, b) for a, b in zip(logits[rid], ref_logits[rid], strict=True)), rid
    assert {b for b, _ in graphs.replays} == set(DEFAULT_BUCKETS)  # every batch bucket replayed
    assert {s for _, s in graphs.replays} == {64, 128, 256}  # and every span


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_replay_tokens_equal_the_plain_eager_tick(tiny, dtype):
    cfg, model, conds = tiny
    schedule = [(0, rid, text, p) for _, rid, text, p in ramp(8, seed=4)]  # all at once: one composition
    plain = new_t3_batch(model, cfg, max_slots=8, max_len=MAX_LEN, device="cuda", dtype=dtype,
                         row_buckets=(4, 8, 16))  # the rows the graphs' buckets 1..8 decode
    ref_tokens, _ = drive(plain, schedule, conds)
    batch = new_t3_batch(model, cfg, max_slots=8, max_len=MAX_LEN, device="cuda", dtype=dtype)
    assert attach_tick_graphs(batch) is not None
    tokens, _ = drive(batch, schedule, conds)
    assert tokens == ref_tokens


def test_stage_part_on_cuda_captures_and_no_cuda_graphs_keeps_eager():
    from stages.common.spec import ModelSpec
    from stages.t3.part import load_t3_part

    assert load_t3_part(ModelSpec(device="cuda"), max_slots=4).batch.graphs is not None
    assert load_t3_part(ModelSpec(device="cuda"), max_slots=4, cuda_graphs=False).batch.graphs is None
