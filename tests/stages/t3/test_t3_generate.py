"""T3 generation: sessions over the static KV cache, determinism, stopping, errors, bad input."""
from __future__ import annotations

import pytest
import torch

from stages.t3.conds import builtin_t3_conditionals
from stages.t3.generate import T3Generator, T3RequestError, generate_tokens
from stages.t3.kv_cache import NoFreeSlotError
from stages.t3.sampling import SamplingParams

TEXT = [40, 41, 2, 50, 51, 52]  # arbitrary text ids < 704, not 255


@pytest.fixture()
def conds(tiny_cfg):
    return builtin_t3_conditionals(tiny_cfg)


def test_same_seed_same_tokens(tiny_gen, conds):
    p = SamplingParams(seed=1234, max_new_tokens=30)
    a = list(generate_tokens(tiny_gen, TEXT, conds, p))
    b = list(generate_tokens(tiny_gen, TEXT, conds, p))
    assert a == b and len(a) > 0
    assert all(0 <= t < tiny_gen.cfg.start_speech_token for t in a)
    assert tiny_gen.pool.free_slots == tiny_gen.pool.max_slots


def test_ignore_eos_yields_exactly_n(tiny_gen, conds):
    n = 40
    toks = list(generate_tokens(tiny_gen, TEXT, conds, SamplingParams(seed=7, max_new_tokens=n, ignore_eos=True)))
    assert len(toks) == n and all(t < tiny_gen.cfg.start_speech_token for t in toks)


def test_interleaved_sessions_match_sequential(tiny_gen, conds):
    """Two requests stepped round-robin give the same tokens as each run alone (separate slots)."""
    p1 = SamplingParams(seed=1, max_new_tokens=25, ignore_eos=True)
    p2 = SamplingParams(seed=2, max_new_tokens=20, ignore_eos=True, temperature=1.0)
    alone = [list(generate_tokens(tiny_gen, TEXT, conds, p1)), list(generate_tokens(tiny_gen, TEXT[:3], conds, p2))]
    s1, s2 = tiny_gen.start(TEXT, conds, p1), tiny_gen.start(TEXT[:3], conds, p2)
    out = [[], []]
    try:
        while not (s1.finished and s2.finished):
            for i, s in enumerate((s1, s2)):
                t = s.step()
                if t is not None:
                    out[i].append(t)
    finally:
        s1.close()
        s2.close()
    assert out == alone
    assert s1.finish_reason == s2.finish_reason == "length"


def test_stop_token_finishes(tiny_gen, conds):
    s = tiny_gen.start(TEXT, conds, SamplingParams(seed=3, max_new_tokens=10))
    try:
        stop = torch.full_like(s.logits, -1e4)
        stop[:, tiny_gen.cfg.stop_speech_token] = 1e4
        s.logits = stop  # force the stop token
        assert s.step() is None
        assert s.finished and s.finish_reason == "stop" and s.closed
        assert s.step() is None
    finally:
        s.close()
    assert tiny_gen.pool.free_slots == tiny_gen.pool.max_slots


def test_non_finite_logits_raise_request_error(tiny_gen, conds):
    s = tiny_gen.start(TEXT, conds, SamplingParams(seed=3))
    s.logits = torch.full_like(s.logits, float("nan"))
    with pytest.raises(T3RequestError):
        s.step()
    assert s.closed and tiny_gen.pool.free_slots == tiny_gen.pool.max_slots
    s.close()  # idempotent
    assert list(generate_tokens(tiny_gen, TEXT, conds, SamplingParams(seed=3, max_new_tokens=5, ignore_eos=True)))


def test_slot_pool_bounded(tiny_gen, conds):
    sessions = [tiny_gen.start(TEXT, conds) for _ in range(tiny_gen.pool.max_slots)]
    try:
        with pytest.raises(NoFreeSlotError, match="max_slots"):
            tiny_gen.start(TEXT, conds)
    finally:
        for s in sessions:
            s.close()
    tiny_gen.start(TEXT, conds).close()


@pytest.mark.parametrize("field,value", [
    ("temperature", 0.0), ("temperature", float("nan")), ("temperature", -1.0),
    ("top_p", 0.0), ("top_p", 1.5), ("min_p", 1.0), ("min_p", -0.1),
    ("cfg_weight", -0.5), ("repetition_penalty", 0.0), ("exaggeration", float("inf")),
    ("max_new_tokens", 0), ("max_new_tokens", 10**6), ("seed", -1), ("ignore_eos", "yes"),
])
def test_bad_params_rejected_naming_field(tiny_gen, conds, field, value):
    with pytest.raises(ValueError, match=field):
        tiny_gen.start(TEXT, conds, SamplingParams(**{field: value}))
    assert tiny_gen.pool.free_slots == tiny_gen.pool.max_slots


def test_max_new_tokens_over_speech_table_rejected(tiny_cfg, tiny_model, conds):
    gen = T3Generator(tiny_model, tiny_cfg, max_slots=1, max_len=tiny_cfg.prefill_len(6) + 5000)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.start(TEXT, conds, SamplingParams(max_new_tokens=tiny_cfg.max_speech_tokens + 1))


@pytest.mark.parametrize("ids", [[], [704], [-1], [1.5], torch.zeros(3)])
def test_bad_text_ids_rejected(tiny_gen, conds, ids):
    with pytest.raises(ValueError, match="text_token_ids"):
        tiny_gen.start(ids, conds)


def test_text_longer_than_slot_or_table_rejected(tiny_gen, conds, tiny_cfg):
    with pytest.raises(ValueError, match="text_token_ids"):
        tiny_gen.start([5] * 200, conds)  # > max_len 160 of the fixture's slots
    with pytest.raises(ValueError, match="text_token_ids"):
        tiny_gen.start([5] * (tiny_cfg.max_text_tokens + 1), conds)


def test_grouped_kv_decode_matches_uncached_forward(tiny_cfg):
    """With grouped KV heads, logits of cached decode steps equal a full causal pass over the sequence."""
    from dataclasses import replace

    from stages.t3.checkpoint import build_builtin_t3

    cfg = replace(tiny_cfg, num_kv_heads=2)
    model = build_builtin_t3(cfg)
    gen = T3Generator(model, cfg, max_slots=1, max_len=80)
    conds = builtin_t3_conditionals(cfg)
    forced = torch.tensor([5, 17, 300, 6000])
    s = gen.start(TEXT, conds, SamplingParams(seed=0))
    steps = [s.logits.clone()]
    for i in range(len(forced)):
        s.feed(forced[i:i + 1])
        steps.append(s.logits.clone())
    s.close()
    with torch.no_grad():  # the same sequence in one prefill: speech ids fed at speech positions 1..4
        emotion = torch.full((1, 1, 1), 0.5)
        cond = model.conditioning(conds.speaker_emb, conds.cond_prompt_speech_tokens, emotion)
        x = model.prefill_embeds(cond, model.pad_text(torch.tensor(TEXT)))
        tail = model.speech_emb(forced) + model.speech_pos_emb(torch.arange(1, 5))
        x = torch.cat((x, tail.expand(2, -1, -1)), dim=1)
        k, v = gen.pool.views(0)
        h = model.tfmr.prefill(x, gen.cos[:x.shape[1]], gen.sin[:x.shape[1]], k, v)
        full = model.speech_logits(h[:, -5:])  # [2, 5, V]
    for i, got in enumerate(steps):
        torch.testing.assert_close(got, full[:, i], rtol=1e-4, atol=1e-5)


def test_bf16_generation_runs(tiny_cfg):
    from stages.t3.checkpoint import build_builtin_t3

    gen = T3Generator(build_builtin_t3(tiny_cfg), tiny_cfg, max_slots=1, max_len=64, dtype=torch.bfloat16)
    p = SamplingParams(seed=1, max_new_tokens=8, ignore_eos=True)
    toks = list(generate_tokens(gen, TEXT, builtin_t3_conditionals(tiny_cfg), p))
    assert len(toks) == 8 and all(0 <= t < tiny_cfg.start_speech_token for t in toks)
