"""Turbo T3 against the reference's golden turbo-tiny run: conditioning, prefill, KV-cached decode, sampling."""
from __future__ import annotations

import torch

from stages.t3.kv_cache import KVCachePool
from stages.t3.turbo_conds import TurboT3Conditionals
from stages.t3.turbo_sampling import (RowParams, TurboSamplingParams, apply_temperature, record_samples,
                                      repetition_penalty_rows, reset_history, top_k_rows, top_p_rows)
from tests.golden_turbo import load_case, rel_l2, scalars, tolerance


def test_conditioning(golden_t3):
    c = load_case("t3_cond")
    tol = tolerance("t3_cond")
    with torch.no_grad():
        spk = golden_t3.cond_enc.spkr_enc(c["speaker_emb"])[:, None]
        prompt = golden_t3.speech_emb(c["cond_prompt_speech_tokens"])
        cond = golden_t3.conditioning(c["speaker_emb"], c["cond_prompt_speech_tokens"])
    assert rel_l2(spk, c["spkr_proj"]) <= tol
    assert rel_l2(prompt, c["cond_prompt_speech_emb"]) <= tol  # no position term on the prompt
    assert rel_l2(cond, c["cond_emb"]) <= tol


def test_prefill(golden_t3, t3_cfg):
    p = load_case("t3_prefill")
    tol = tolerance("t3_prefill")
    text = p["text_tokens"][0]
    assert t3_cfg.prefill_len(len(text)) == scalars("t3_prefill")["prefill_len"] == 396
    pool = KVCachePool(t3_cfg, 1, 512, 1, "cpu", torch.float32)
    k, v = pool.views(0)
    with torch.no_grad():
        cond = golden_t3.conditioning(p["speaker_emb"], p["cond_prompt_speech_tokens"])
        x = golden_t3.prefill_embeds(cond, text)
        assert rel_l2(x, p["inputs_embeds"]) <= tol
        tf = golden_t3.tfmr
        h = x + tf.wpe(torch.arange(x.shape[1]))  # GPT-2 adds wpe(0..L-1) itself
        for i, block in enumerate(tf.h):
            h = block.prefill(h, k[i], v[i])
            assert rel_l2(h[0, -1], p["layer_outputs_last"][i]) <= tol, i
        hidden = tf.prefill(x, k, v)[:, -1]
    assert rel_l2(hidden, p["hidden_last"]) <= tol
    assert rel_l2(golden_t3.speech_logits(hidden), p["logits"]) <= tol


def _golden_session(gen, p):
    conds = TurboT3Conditionals(p["speaker_emb"], p["cond_prompt_speech_tokens"])
    return gen.start(p["text_tokens"][0], conds, TurboSamplingParams(seed=0))


def test_teacher_forced_decode_and_sampling_chain(turbo_gen, golden_t3):
    """Feed the golden samples through the static-KV-cache decode; check every processor's output."""
    p, d = load_case("t3_prefill"), load_case("t3_decode")
    sc = scalars("t3_decode")
    params = TurboSamplingParams(temperature=sc["temperature"], top_k=sc["top_k"], top_p=sc["top_p"],
                                 repetition_penalty=sc["repetition_penalty"])
    assert params == TurboSamplingParams()  # the golden run used Turbo's defaults
    rows = RowParams.from_params([params])
    near_k, near_p = set(sc["steps_near_top_k_boundary"]), set(sc["steps_near_top_p_boundary"])
    sampled = d["sampled_tokens"]
    tol = tolerance("t3_decode")
    seen = torch.zeros(1, golden_t3.cfg.speech_vocab_size, dtype=torch.bool)
    reset_history(seen, 0, golden_t3.cfg.start_speech_token)
    session = _golden_session(turbo_gen, p)
    returned = []
    try:
        for i in range(len(sampled)):
            logits = session.logits  # [1, V]: step 0 from the prefill, step i from sampled[i-1]
            assert rel_l2(logits[0], d["step_logits"][i]) <= tol, i
            if i:
                with torch.no_grad():
                    emb = golden_t3.step_embeds(sampled[i - 1 : i])[0, 0]
                assert rel_l2(emb, d["step_inputs_embeds"][i - 1]) <= tol, i
            history = d["rep_history"][i]
            want_seen = torch.zeros_like(seen[0])
            want_seen[history[history >= 0]] = True
            assert torch.equal(seen[0], want_seen), i  # [6561] first, then the samples without BOS
            x = top_k_rows(apply_temperature(logits, rows.temperature), rows.top_k)
            if i not in near_k:
                assert torch.equal(torch.isfinite(x[0]).to(torch.uint8), d["kept_after_top_k"][i]), i
            x = top_p_rows(x, rows.top_p_drop, rows.top_p_on)
            if i not in near_p:
                assert torch.equal(torch.isfinite(x[0]).to(torch.uint8), d["kept_after_top_p"][i]), i
                x = repetition_penalty_rows(x, seen, rows.penalty)
                ref = d["after_repetition_penalty"][i]
                assert torch.equal(torch.isinf(x[0]), torch.isinf(ref)), i
                fin = torch.isfinite(ref)
                assert rel_l2(x[0][fin], ref[fin]) <= tol, i
            tok = session.step(choose=lambda probs: sampled[i : i + 1])
            if i not in near_p:
                assert rel_l2(session.last_probs[0], d["probs"][i]) <= tol, i
            if tok is not None:
                returned.append(tok)
            record_samples(seen, sampled[i : i + 1], torch.tensor([i == 0]))
    finally:
        session.close()
    assert session.finished and session.finish_reason == "stop"  # the last golden sample is EOS 6562
    assert session.generated == len(sampled)  # 1 from the prefill + 19 cached steps, EOS included
    assert returned == d["returned_tokens"][0].tolist()  # trailing EOS stripped


def test_decode_hidden_states_positions_continue_through_the_cache(turbo_gen, golden_t3):
    """step_hidden_last: the cached step consuming sample i sits at position prefill_len + i - 1."""
    p, d = load_case("t3_prefill"), load_case("t3_decode")
    session = _golden_session(turbo_gen, p)
    g = turbo_gen
    try:
        for i in range(1, 4):
            pos = session._pos.clone()
            assert int(pos) == 396 + i - 1
            visible = (g.positions <= pos).view(1, 1, 1, -1)
            with torch.no_grad():
                h = golden_t3.tfmr.decode(golden_t3.step_embeds(d["sampled_tokens"][i - 1 : i]), pos, visible,
                                          session._k, session._v)
            assert rel_l2(h[0, 0], d["step_hidden_last"][i]) <= tolerance("t3_decode")
            session.feed(d["sampled_tokens"][i - 1 : i])
    finally:
        session.close()
