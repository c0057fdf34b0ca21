"""Turbo's T3 on the batched tick: the same logits as the golden-checked solo session, each request its solo
tokens in any batch, the reference's history and first-sample rules, and the Turbo request parameters."""
from __future__ import annotations

import random

import pytest
import torch

from stages.common.params import parse_params
from stages.common.spec import ModelSpec
from stages.t3.turbo_part import load_turbo_model, load_turbo_t3_part
from stages.t3.turbo_generate import TurboT3Generator
from stages.t3.turbo_sampling import TurboSamplingParams
from tests.golden import rel_l2
from tests.stages.t3.test_t3_batch import run

SPEC = ModelSpec(preset="turbo-tiny")


@pytest.fixture(scope="module")
def part():
    return load_turbo_t3_part(SPEC, max_slots=6, max_len=512)


def make_requests(n: int, seed: int = 0):
    """n requests with different texts, seeds and Turbo sampling parameters."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = [rng.randrange(0, 1000) for _ in range(rng.randint(2, 25))]
        p = TurboSamplingParams(seed=500 + i, max_new_tokens=rng.randint(6, 16), ignore_eos=rng.choice([True, False]),
                                temperature=rng.choice([0.8, 1.0]), top_k=rng.choice([1000, 50, 0]),
                                top_p=rng.choice([0.95, 1.0]), repetition_penalty=rng.choice([1.2, 1.0]))
        out.append((f"r{i}", text, p))
    return out


def test_tick_logits_equal_the_solo_session(part):
    """Prefill and every decode step of the tick give the logits of the session the golden tests check."""
    model, cfg, _, conds = load_turbo_model(SPEC)
    gen = TurboT3Generator(model, cfg, max_slots=1, max_len=512)
    text = [5, 77, 300, 999, 12]
    p = TurboSamplingParams(seed=9, max_new_tokens=12, ignore_eos=True)
    tokens, _, logits = run(part.batch, [(0, "a", text, p)], conds)
    assert len(tokens["a"]) == 12 and len(logits["a"]) == 12
    session = gen.start(text, conds, p)
    try:
        drawn = [*tokens["a"]]
        for k, tick_logits in enumerate(logits["a"]):
            assert rel_l2(tick_logits[0], session.logits[0]) < 1e-5, k
            if k + 1 < len(logits["a"]):
                session.feed(torch.tensor([drawn[k]]))
    finally:
        session.close()


def test_alone_equals_inside_batches_of_1_3_6(part, one_thread):
    _, _, _, conds = load_turbo_model(SPEC)
    batch = part.batch
    reqs = make_requests(6)
    alone = {r[0]: run(batch, [(0, *r)], conds) for r in reqs}
    rng = random.Random(1)
    for size in (1, 3, 6):
        chosen = rng.sample(reqs, size)
        schedule = [(rng.randint(0, 4), rid, text, p) for rid, text, p in chosen]  # joining at different ticks
        tokens, ends, logits = run(batch, schedule, conds)
        for rid, _, p in chosen:
            assert tokens[rid] == alone[rid][0][rid], (size, rid)
            assert ends[rid] == alone[rid][1][rid]
            assert all(torch.equal(a, b) for a, b in zip(logits[rid], alone[rid][2][rid], strict=True)), (size, rid)
    assert batch.active == 0 and not batch.slots


def test_first_sample_is_not_eos_checked_and_replaces_the_bos_in_the_history(part):
    """The prefill's sample: a 6562 there is fed back (no stop); the history is then {that id}, without BOS."""
    _, cfg, _, conds = load_turbo_model(SPEC)
    batch = part.batch
    real = batch.model.probs
    calls = []

    def forced(logits, rows, seen):  # every draw is EOS; record the history each draw sees
        calls.append(seen.clone())
        probs, finite = real(logits, rows, seen)
        return torch.nn.functional.one_hot(torch.full_like(finite, cfg.stop_speech_token, dtype=torch.long),
                                           probs.shape[-1]).float(), finite

    batch.model.probs = forced
    try:
        tokens, ends, _ = run(batch, [(0, "e", [1, 2, 3], TurboSamplingParams(seed=1))], conds)
    finally:
        batch.model.probs = real
    assert tokens["e"] == [] and ends["e"] == "stop" and len(calls) == 2  # 6562 first (fed back), then the stop
    assert calls[0][0].nonzero().flatten().tolist() == [cfg.start_speech_token]  # {BOS} for the first sample
    assert calls[1][0].nonzero().flatten().tolist() == [cfg.stop_speech_token]  # BOS replaced by the first sample


def test_turbo_request_parameters():
    p = parse_params({"top_k": 50, "cfg_weight": 0.5, "exaggeration": 0.7, "min_p": 0.05, "seed": 3}, model="turbo")
    assert p.sampling == TurboSamplingParams(top_k=50, seed=3)  # the base model's knobs are accepted, without effect
    assert p.schedule.n_timesteps == 2  # Turbo's default solver steps
    assert parse_params({}, model="chatterbox").schedule.n_timesteps == 10
    with pytest.raises(ValueError, match=r"unknown parameter\(s\): top_k \(not a chatterbox parameter\)"):
        parse_params({"top_k": 5})
    with pytest.raises(ValueError, match="top_k must be an integer >= 0"):
        parse_params({"top_k": -1}, model="turbo")
    with pytest.raises(ValueError, match="cfg_weight must be a finite number >= 0"):
        parse_params({"cfg_weight": "x"}, model="turbo")
