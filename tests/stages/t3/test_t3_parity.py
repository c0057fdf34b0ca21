"""T3 against the reference's golden tiny run: conditioning, prefill, KV-cached decode, sampling chain."""
from __future__ import annotations

import math

import torch

from stages.t3.conds import T3Conditionals
from stages.t3.config import T3Config
from stages.t3.llama import llama3_inv_freq
from stages.t3.sampling import (SamplingParams, cfg_combine, min_p_filter, next_token_probs, repetition_penalty,
                                top_p_filter)
from tests.golden import GOLDEN_DIR, cases, config, load_case, rel_l2, tolerance


def test_config_from_golden_dir_is_tiny_preset():
    assert T3Config.from_checkpoint_dir(GOLDEN_DIR) == T3Config.from_name("tiny")


def test_llama3_inv_freq_matches_reference():
    ref = torch.tensor(config()["t3"]["inv_freq_rope"])
    assert torch.equal(llama3_inv_freq(T3Config.from_name("tiny")), ref)


def test_conditioning(tiny_model):
    c = load_case("t3_cond")
    with torch.no_grad():
        pe = tiny_model.prompt_embeds(c["cond_prompt_speech_tokens"])
        out = tiny_model.conditioning(c["speaker_emb"], c["cond_prompt_speech_tokens"], c["emotion_adv"])
    assert rel_l2(pe, c["cond_prompt_speech_emb"]) <= tolerance("t3_cond")
    assert rel_l2(out, c["cond_emb"]) <= tolerance("t3_cond", "cond_emb")


def _prefill_session(gen, case):
    conds = T3Conditionals(case["speaker_emb"], case["cond_prompt_speech_tokens"], case["emotion_adv"])
    params = SamplingParams(exaggeration=float(case["emotion_adv"].item()), seed=0)
    return gen.start(case["text_tokens_raw"][0], conds, params)


def test_prefill(tiny_model, tiny_gen):
    p = load_case("t3_prefill")
    with torch.no_grad():
        cond = tiny_model.conditioning(p["speaker_emb"], p["cond_prompt_speech_tokens"], p["emotion_adv"])
        padded = tiny_model.pad_text(p["text_tokens_raw"][0])
        embeds = tiny_model.prefill_embeds(cond, padded)
    assert torch.equal(padded, p["text_tokens"][0])
    assert rel_l2(embeds, p["inputs_embeds"]) <= tolerance("t3_prefill", "inputs_embeds")
    session = _prefill_session(tiny_gen, p)
    try:
        assert rel_l2(session.logits, p["last_logits"]) <= tolerance("t3_prefill", "last_logits")
        w = cases()["t3_prefill"]["scalars"]["cfg_weight"]
        assert rel_l2(cfg_combine(session.logits, w), p["cfg_logits"]) <= tolerance("t3_prefill", "cfg_logits")
    finally:
        session.close()


def test_kv_cached_decode_and_sampling_chain(tiny_gen):
    """Teacher-force the golden tokens one at a time through the static-KV-cache decode path."""
    p, d = load_case("t3_prefill"), load_case("t3_decode")
    sc = cases()["t3_decode"]["scalars"]
    params = SamplingParams(temperature=sc["temperature"], min_p=sc["min_p"], top_p=sc["top_p"],
                            repetition_penalty=sc["repetition_penalty"], cfg_weight=sc["cfg_weight"])
    noisy = set(sc["steps_with_near_threshold_tokens"])
    forced = d["forced_tokens"]
    seen = torch.zeros(tiny_gen.cfg.speech_vocab_size, dtype=torch.bool)
    seen[tiny_gen.cfg.start_speech_token] = True
    session = _prefill_session(tiny_gen, p)
    tol = tolerance("t3_decode")
    try:
        for i in range(len(forced)):
            logits = session.logits  # [2, V]
            assert rel_l2(logits, d["step_logits"][i]) <= tol, i
            cfg_l = cfg_combine(logits, params.cfg_weight)
            assert rel_l2(cfg_l, d["cfg_logits"][i:i + 1]) <= tol, i
            rep = repetition_penalty(cfg_l, seen, params.repetition_penalty)
            assert rel_l2(rep, d["after_repetition_penalty"][i:i + 1]) <= tol, i
            if i not in noisy:
                mp = top_p_filter(min_p_filter(rep / params.temperature, params.min_p), params.top_p)
                ref = d["after_min_p"][i:i + 1]
                assert torch.equal(torch.isinf(mp), torch.isinf(ref)), i
                fin = torch.isfinite(ref)
                assert rel_l2(mp[fin], ref[fin]) <= tol, i
                probs, finite = next_token_probs(logits, seen, params)
                assert bool(finite)
                assert rel_l2(probs, d["probs"][i:i + 1]) <= tol, i
            seen[forced[i]] = True
            if i < len(forced) - 1:
                session.feed(forced[i:i + 1])
    finally:
        session.close()
    assert d["returned_tokens"][0].tolist() == forced.tolist()
    assert not math.isnan(tol)
