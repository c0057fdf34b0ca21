"""T3 against the reference's golden tiny run: conditioning, prefill (cached voice prefix + text), the tick's
KV-cached decode, the vectorised sampling chain."""
from __future__ import annotations

import math

import torch

from stages.t3.conds import T3Conditionals
from stages.t3.config import T3Config
from stages.t3.llama import llama3_inv_freq
from stages.t3.generate import admission
from stages.t3.sampling import (SamplingParams, SamplingRows, cfg_combine, min_p_filter, next_token_probs,
                                repetition_penalty, top_p_filter)
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


def _admit(batch, case):
    """Admit the case's request (prefix from the cache + text prefill); returns its logits [2, V]."""
    conds = T3Conditionals(case["speaker_emb"], case["cond_prompt_speech_tokens"], case["emotion_adv"])
    params = SamplingParams(exaggeration=float(case["emotion_adv"].item()), seed=0, ignore_eos=True, max_new_tokens=50)
    batch.admit([admission(batch, "golden", case["text_tokens_raw"][0], conds, params)])
    return batch.logits[0]


def test_prefill(tiny_model, tiny_batch):
    p = load_case("t3_prefill")
    with torch.no_grad():
        cond = tiny_model.conditioning(p["speaker_emb"], p["cond_prompt_speech_tokens"], p["emotion_adv"])
        padded = tiny_model.pad_text(p["text_tokens_raw"][0])
        embeds = tiny_model.prefill_embeds(cond, padded)
    assert torch.equal(padded, p["text_tokens"][0])
    assert rel_l2(embeds, p["inputs_embeds"]) <= tolerance("t3_prefill", "inputs_embeds")
    logits = _admit(tiny_batch, p)
    assert rel_l2(logits, p["last_logits"]) <= tolerance("t3_prefill", "last_logits")
    w = cases()["t3_prefill"]["scalars"]["cfg_weight"]
    assert rel_l2(cfg_combine(logits[None], w), p["cfg_logits"]) <= tolerance("t3_prefill", "cfg_logits")
    rows = SamplingRows.from_params([SamplingParams(cfg_weight=w)])
    assert rel_l2(cfg_combine(logits[None], rows.cfg_weight), p["cfg_logits"]) <= tolerance("t3_prefill", "cfg_logits")


def test_kv_cached_decode_and_sampling_chain(tiny_batch):
    """Teacher-force the golden tokens one at a time through the static-KV-cache decode path."""
    p, d = load_case("t3_prefill"), load_case("t3_decode")
    sc = cases()["t3_decode"]["scalars"]
    params = SamplingParams(temperature=sc["temperature"], min_p=sc["min_p"], top_p=sc["top_p"],
                            repetition_penalty=sc["repetition_penalty"], cfg_weight=sc["cfg_weight"])
    noisy = set(sc["steps_with_near_threshold_tokens"])
    forced = d["forced_tokens"]
    rows = SamplingRows.from_params([params])  # the same parameters as [1, 1] per-row tensors
    seen = torch.zeros(1, tiny_batch.model.vocab_size, dtype=torch.bool)
    seen[0, tiny_batch.model.history_start[0]] = True
    logits = _admit(tiny_batch, p)
    tol = tolerance("t3_decode")
    for i in range(len(forced)):
        assert rel_l2(logits, d["step_logits"][i]) <= tol, i
        cfg_l = cfg_combine(logits[None], params.cfg_weight)
        assert rel_l2(cfg_l, d["cfg_logits"][i:i + 1]) <= tol, i
        rep = repetition_penalty(cfg_l, seen, params.repetition_penalty)
        assert rel_l2(rep, d["after_repetition_penalty"][i:i + 1]) <= tol, i
        assert torch.equal(repetition_penalty(cfg_l, seen, rows.repetition_penalty), rep), i
        if i not in noisy:
            mp = top_p_filter(min_p_filter(rep / params.temperature, params.min_p), params.top_p)
            ref = d["after_min_p"][i:i + 1]
            assert torch.equal(torch.isinf(mp), torch.isinf(ref)), i
            fin = torch.isfinite(ref)
            assert rel_l2(mp[fin], ref[fin]) <= tol, i
            probs, finite = next_token_probs(logits[None], seen, rows)
            assert bool(finite.all())
            assert rel_l2(probs, d["probs"][i:i + 1]) <= tol, i
        seen[0, forced[i]] = True
        if i < len(forced) - 1:
            tiny_batch.tokens[0] = forced[i]  # teacher forcing: the tick feeds this id instead of its draw
            tiny_batch.tick()
            logits = tiny_batch.logits[0]
    assert d["returned_tokens"][0].tolist() == forced.tolist()
    assert not math.isnan(tol)
