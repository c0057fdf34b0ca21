"""One request through the T3 tick: determinism, stopping, errors, bad input, the slot freed."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from stages.t3.conds import builtin_t3_conditionals
from stages.t3.generate import T3RequestError, admission, generate_tokens, new_t3_batch
from stages.t3.sampling import SamplingParams

TEXT = [40, 41, 2, 50, 51, 52]  # arbitrary text ids < 704, not 255


@pytest.fixture()
def conds(tiny_cfg):
    return builtin_t3_conditionals(tiny_cfg)


def test_same_seed_same_tokens(tiny_batch, conds):
    p = SamplingParams(seed=1234, max_new_tokens=30)
    a = list(generate_tokens(tiny_batch, TEXT, conds, p))
    b = list(generate_tokens(tiny_batch, TEXT, conds, p))
    assert a == b and len(a) > 0
    assert all(0 <= t < tiny_batch.model.num_codes for t in a)
    assert tiny_batch.free_slots == tiny_batch.max_slots and not tiny_batch.slots
    assert list(generate_tokens(tiny_batch, TEXT, conds, replace(p, seed=1235))) != a


def test_ignore_eos_yields_exactly_n(tiny_batch, conds):
    for n in (1, 2, 40):
        toks = list(generate_tokens(tiny_batch, TEXT, conds, SamplingParams(seed=7, max_new_tokens=n, ignore_eos=True)))
        assert len(toks) == n and all(t < tiny_batch.model.num_codes for t in toks)


def test_stop_token_finishes_and_is_not_handed_out(tiny_cfg, tiny_model, conds):
    batch = new_t3_batch(tiny_model, tiny_cfg, max_slots=1, max_len=160)
    real_logits = batch.model.logits

    def stop_after_three(hidden):  # fault injection: 3 speech tokens, then only the stop token
        out = real_logits(hidden)
        if batch.slots and batch.slots[0].drawn >= 3:
            out = torch.full_like(out, -1e4)
            out[..., tiny_cfg.stop_speech_token] = 1e4
        else:
            out[..., tiny_cfg.num_speech_codes:] = -1e4
        return out

    batch.model.logits = stop_after_three
    events = batch.admit([admission(batch, "s", TEXT, conds, SamplingParams(seed=3, max_new_tokens=10))])
    while batch.active:
        events += batch.tick()
    assert [e.token is not None for e in events] == [True, True, True, False]
    assert events[-1].finish == "stop" and batch.free_slots == 1


def test_early_close_frees_the_slot(tiny_batch, conds):
    it = generate_tokens(tiny_batch, TEXT, conds, SamplingParams(seed=1, max_new_tokens=50, ignore_eos=True))
    next(it)
    assert tiny_batch.active == 1
    it.close()
    assert tiny_batch.active == 0 and not tiny_batch.slots


def test_non_finite_logits_raise_request_error(tiny_batch, conds):
    it = generate_tokens(tiny_batch, TEXT, conds, SamplingParams(seed=3, max_new_tokens=20, ignore_eos=True))
    next(it)
    for t in tiny_batch.cache.k:  # a NaN in the request's cache makes its next logits non-finite
        t[0:2, :, 0] = float("nan")
    with pytest.raises(T3RequestError, match="non-finite"):
        list(it)
    assert tiny_batch.free_slots == tiny_batch.max_slots
    assert all(torch.isfinite(t).all() for t in tiny_batch.cache.k + tiny_batch.cache.v)  # the slot was scrubbed
    assert len(list(generate_tokens(tiny_batch, TEXT, conds, SamplingParams(seed=3, max_new_tokens=5, ignore_eos=True)))) == 5


def test_shared_batch_is_refused_by_the_solo_driver(tiny_batch, conds):
    tiny_batch.admit([admission(tiny_batch, "other", TEXT, conds, SamplingParams(seed=1, max_new_tokens=5))])
    with pytest.raises(RuntimeError, match="idle"):
        generate_tokens(tiny_batch, TEXT, conds)


def test_admissions_bounded_by_free_slots(tiny_batch, conds):
    adms = [admission(tiny_batch, f"r{i}", TEXT, conds, SamplingParams(seed=i)) for i in range(3)]
    with pytest.raises(ValueError, match="free T3 slot"):
        tiny_batch.admit(adms)
    tiny_batch.admit(adms[:2])
    assert tiny_batch.free_slots == 0
    assert tiny_batch.cancel("r0") and tiny_batch.free_slots == 1  # freed at once, compacted at the next step
    tiny_batch.admit(adms[2:])
    assert sorted(a.rid for a in tiny_batch.slots) == ["r1", "r2"]


@pytest.mark.parametrize("field,value", [
    ("temperature", 0.0), ("temperature", float("nan")), ("temperature", -1.0),
    ("top_p", 0.0), ("top_p", 1.5), ("min_p", 1.0), ("min_p", -0.1),
    ("cfg_weight", -0.5), ("repetition_penalty", 0.0), ("exaggeration", float("inf")),
    ("max_new_tokens", 0), ("max_new_tokens", 10**6), ("seed", -1), ("ignore_eos", "yes"),
])
def test_bad_params_rejected_naming_field(tiny_batch, conds, field, value):
    with pytest.raises(ValueError, match=field):
        generate_tokens(tiny_batch, TEXT, conds, SamplingParams(**{field: value}))
    assert tiny_batch.free_slots == tiny_batch.max_slots


def test_max_new_tokens_over_speech_table_rejected(tiny_cfg, tiny_model, conds):
    batch = new_t3_batch(tiny_model, tiny_cfg, max_slots=1, max_len=tiny_cfg.prefill_len(6) + 5000)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_tokens(batch, TEXT, conds, SamplingParams(max_new_tokens=tiny_cfg.max_speech_tokens + 1))


@pytest.mark.parametrize("ids", [[], [704], [-1], [1.5], torch.zeros(3)])
def test_bad_text_ids_rejected(tiny_batch, conds, ids):
    with pytest.raises(ValueError, match="text_token_ids"):
        generate_tokens(tiny_batch, ids, conds)


def test_text_longer_than_slot_or_table_rejected(tiny_batch, conds, tiny_cfg):
    with pytest.raises(ValueError, match="text_token_ids"):
        generate_tokens(tiny_batch, [5] * 200, conds)  # > max_len 160 of the fixture's slots
    with pytest.raises(ValueError, match="text_token_ids"):
        generate_tokens(tiny_batch, [5] * (tiny_cfg.max_text_tokens + 1), conds)


def test_grouped_kv_decode_matches_uncached_forward(tiny_cfg):
    """With grouped KV heads, the prefix + text prefill and teacher-forced ticks equal one causal pass."""
    from stages.t3.checkpoint import build_builtin_t3

    cfg = replace(tiny_cfg, num_kv_heads=2)
    model = build_builtin_t3(cfg)
    batch = new_t3_batch(model, cfg, max_slots=1, max_len=80)
    conds = builtin_t3_conditionals(cfg)
    forced = torch.tensor([5, 17, 300, 6000])
    batch.admit([admission(batch, "g", TEXT, conds, SamplingParams(seed=0, max_new_tokens=20, ignore_eos=True))])
    steps = [batch.logits[0].clone()]
    for tok in forced:
        batch.tokens[0] = tok  # teacher forcing: feed this id instead of the draw
        batch.tick()
        steps.append(batch.logits[0].clone())
    with torch.no_grad():  # the same sequence in one prefill: speech ids fed at speech positions 1..4
        emotion = torch.full((1, 1, 1), 0.5)
        cond = model.conditioning(conds.speaker_emb, conds.cond_prompt_speech_tokens, emotion)
        x = model.prefill_embeds(cond, model.pad_text(torch.tensor(TEXT)))
        tail = model.speech_emb(forced) + model.speech_pos_emb(torch.arange(1, 5))
        x = torch.cat((x, tail.expand(2, -1, -1)), dim=1)
        k, v = batch.cache.rows(0, 2)
        m = batch.model
        h = model.tfmr.prefill(x, m.cos[:x.shape[1]], m.sin[:x.shape[1]], k, v)
        full = model.speech_logits(h[:, -5:])  # [2, 5, V]
    for i, got in enumerate(steps):
        torch.testing.assert_close(got, full[:, i], rtol=1e-4, atol=1e-5)


def test_bf16_generation_runs(tiny_cfg):
    from stages.t3.checkpoint import build_builtin_t3

    batch = new_t3_batch(build_builtin_t3(tiny_cfg), tiny_cfg, max_slots=1, max_len=64, dtype=torch.bfloat16)
    p = SamplingParams(seed=1, max_new_tokens=8, ignore_eos=True)
    toks = list(generate_tokens(batch, TEXT, builtin_t3_conditionals(tiny_cfg), p))
    assert len(toks) == 8 and all(0 <= t < tiny_cfg.start_speech_token for t in toks)
