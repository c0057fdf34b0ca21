"""Turbo's sampling rules and row independence: what a batched tick relies on, and the reference's loop."""
from __future__ import annotations

import pytest
import torch

from stages.t3.generate import T3RequestError
from stages.t3.kv_cache import NoFreeSlotError
from stages.t3.turbo_conds import TurboT3Conditionals
from stages.t3.turbo_generate import TurboT3Generator, generate_turbo_tokens
from stages.t3.turbo_sampling import (ROW_EXHAUSTED, ROW_NON_FINITE, ROW_OK, RowParams, TurboSamplingParams,
                                      next_tokens, record_samples, repetition_penalty_rows,
                                      reset_history, top_k_rows)
from tests.golden_turbo import load_case, rel_l2

V = 6563
BOS, EOS = 6561, 6562
CONTROL = torch.arange(V) >= BOS
PARAMS = [TurboSamplingParams(),
          TurboSamplingParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0),
          TurboSamplingParams(temperature=0.5, top_k=7, top_p=0.5, repetition_penalty=2.0, ignore_eos=True)]


def _rows_state(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, V, generator=g)
    seen = torch.rand(n, V, generator=g) < 0.01
    noise = torch.empty(n, V).exponential_(generator=g)
    return logits, seen, noise


def test_rows_are_independent():
    """B rows with different parameters in one call give exactly what each row gives alone."""
    logits, seen, noise = _rows_state(len(PARAMS))
    rows = RowParams.from_params(PARAMS)
    first = torch.tensor([True, False, False])
    batched = next_tokens(logits, rows, seen, first, noise, CONTROL)
    for i, p in enumerate(PARAMS):
        solo = next_tokens(logits[i : i + 1], RowParams.from_params([p]), seen[i : i + 1], first[i : i + 1],
                           noise[i : i + 1], CONTROL)
        assert torch.equal(batched.tokens[i : i + 1], solo.tokens)
        assert torch.equal(batched.probs[i : i + 1], solo.probs)
        assert int(batched.status[i]) == ROW_OK
    kept = (batched.probs > 0).sum(-1).tolist()
    assert kept[1] == V and kept[2] <= 7  # row 1: every filter off; row 2: top-k 7 and top-p 0.5
    assert not bool(batched.probs[2, BOS:].any())  # ignore_eos bans BOS/EOS


def test_top_k_keeps_ties_and_zero_is_off():
    x = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]])
    kept = torch.isfinite(top_k_rows(x, torch.tensor([3]))).tolist()
    assert kept == [[False, True, True, True, False]]  # >= the 3rd largest: both 2.0s survive
    assert torch.isfinite(top_k_rows(x, torch.tensor([2]))).sum() == 3
    assert torch.equal(top_k_rows(x, torch.tensor([0])), x)
    assert torch.equal(top_k_rows(x, torch.tensor([99])), x)


def test_top_p_threshold_is_the_reference_float():
    """1 - 0.95 is formed in float64 and compared in float32 (not float32(1) - float32(0.95))."""
    rows = RowParams.from_params([TurboSamplingParams(top_p=0.95)])
    assert rows.top_p_drop.item() == torch.tensor(1 - 0.95, dtype=torch.float32).item()
    assert rows.top_p_drop.item() != (1 - torch.tensor(0.95, dtype=torch.float32)).item()


def test_repetition_penalty_once_per_id_and_minus_inf_stays():
    x = torch.tensor([[-2.0, 3.0, float("-inf"), 1.0]])
    seen = torch.tensor([[True, True, True, False]])
    out = repetition_penalty_rows(x, seen, torch.tensor([2.0]))
    assert out.tolist() == [[-4.0, 1.5, float("-inf"), 1.0]]


def test_history_rules():
    seen = torch.zeros(2, V, dtype=torch.bool)
    reset_history(seen, 0, BOS)
    reset_history(seen, 1, BOS)
    record_samples(seen, torch.tensor([5, 7]), torch.tensor([True, False]))
    assert seen[0].nonzero().flatten().tolist() == [5]  # the first sample replaces [6561]
    assert seen[1].nonzero().flatten().tolist() == [7, BOS]
    record_samples(seen, torch.tensor([5, BOS]), torch.tensor([False, False]))
    assert seen[0].nonzero().flatten().tolist() == [5]
    assert seen[1].nonzero().flatten().tolist() == [7, BOS]


def test_status_codes():
    logits, seen, noise = _rows_state(3, seed=1)
    logits[0] = float("-inf")  # every logit -inf on a later step: the reference's break
    logits[1, 3] = float("nan")
    logits[2] = float("-inf")
    rows = RowParams.from_params(PARAMS[:1] * 3)
    out = next_tokens(logits, rows, seen, torch.tensor([False, False, True]), noise, CONTROL)
    assert out.status.tolist() == [ROW_EXHAUSTED, ROW_NON_FINITE, ROW_NON_FINITE]


# --- the session loop (reference inference_turbo) --------------------------------------------------------
@pytest.fixture()
def golden_request():
    p = load_case("t3_prefill")
    return p["text_tokens"][0], TurboT3Conditionals(p["speaker_emb"], p["cond_prompt_speech_tokens"])


def _forced(*tokens):
    it = iter(tokens)
    return lambda probs: torch.tensor([next(it)])


def test_first_sample_is_not_eos_checked(turbo_gen, golden_request):
    text, conds = golden_request
    s = turbo_gen.start(text, conds, TurboSamplingParams(seed=1))
    try:
        choose = _forced(EOS, 17, EOS)
        assert s.step(choose) is None and not s.finished  # fed back like any id, not handed out
        assert s._seen[0].nonzero().flatten().tolist() == [EOS]
        assert s.step(choose) == 17
        assert s.step(choose) is None and s.finished and s.finish_reason == "stop"
        assert s.generated == 3 and turbo_gen.pool.free_slots == 3
    finally:
        s.close()


def test_all_minus_inf_stops_before_sampling(turbo_gen, golden_request):
    text, conds = golden_request
    s = turbo_gen.start(text, conds, TurboSamplingParams(seed=1))
    assert s.step(_forced(11)) == 11
    s.logits = torch.full_like(s.logits, float("-inf"))
    assert s.step() is None and s.finish_reason == "stop" and s.generated == 1


@pytest.mark.parametrize("poison", ["-inf at the prefill", "nan"])
def test_non_finite_logits_fail_only_that_request(turbo_gen, golden_request, poison):
    text, conds = golden_request
    other = turbo_gen.start(text, conds, TurboSamplingParams(seed=2))
    s = turbo_gen.start(text, conds, TurboSamplingParams(seed=1))
    if poison == "nan":
        s.step()
        s.logits = s.logits.clone()  # (inference tensors are read-only outside inference mode)
        s.logits[0, 100] = float("nan")
    else:
        s.logits = torch.full_like(s.logits, float("-inf"))
    with pytest.raises(T3RequestError, match="non-finite Turbo T3 logits"):
        s.step()
    assert s.closed and turbo_gen.pool.free_slots == 2
    other.step()  # the other request carries on
    assert other.generated == 1 and not other.closed
    other.close()


def test_ignore_eos_and_length(turbo_gen, golden_request):
    text, conds = golden_request
    s = turbo_gen.start(text, conds, TurboSamplingParams(seed=3, ignore_eos=True, max_new_tokens=6))
    s.step()
    s.logits = s.logits.clone()
    s.logits[0, EOS] = 1e4  # EOS would be certain: masked out for ignore_eos
    tokens = [s.step() for _ in range(5)]
    assert all(t is not None and t < BOS for t in tokens)
    assert s.finished and s.finish_reason == "length" and s.generated == 6
    out = list(generate_turbo_tokens(turbo_gen, text, conds, TurboSamplingParams(seed=4, ignore_eos=True,
                                                                                   max_new_tokens=5)))
    assert len(out) == 5


def test_seeded_tokens_are_reproducible(turbo_gen, golden_request):
    text, conds = golden_request
    params = TurboSamplingParams(seed=5, max_new_tokens=8)
    a = list(generate_turbo_tokens(turbo_gen, text, conds, params))
    assert a == list(generate_turbo_tokens(turbo_gen, text, conds, params))


def test_at_most_1001_samples(golden_t3, t3_cfg, golden_request):
    text, conds = golden_request
    gen = TurboT3Generator(golden_t3, t3_cfg, max_slots=1, max_len=2048)
    assert gen.max_new_tokens_limit(len(text), conds.n_prompt) == 1001  # 1 from the prefill + max_gen_len 1000
    with pytest.raises(ValueError, match="max_new_tokens 1002 exceeds the limit 1001"):
        gen.start(text, conds, TurboSamplingParams(max_new_tokens=1002))
    with gen.start(text, conds, TurboSamplingParams()) as s:
        assert s.max_new_tokens == 1001
    small = TurboT3Generator(golden_t3, t3_cfg, max_slots=1, max_len=400)
    assert small.max_new_tokens_limit(len(text), conds.n_prompt) == 400 - 396 + 1  # the slot's room


def test_bad_requests_fail_before_any_compute(turbo_gen, golden_request):
    text, conds = golden_request
    for params, field in [(TurboSamplingParams(top_k=-1), "top_k"), (TurboSamplingParams(top_p=0.0), "top_p"),
                          (TurboSamplingParams(temperature=0.0), "temperature"),
                          (TurboSamplingParams(repetition_penalty=float("nan")), "repetition_penalty")]:
        with pytest.raises(ValueError, match=field):
            turbo_gen.start(text, conds, params)
    with pytest.raises(ValueError, match=r"text_token_ids: ids must be in \[0, 1000\)"):
        turbo_gen.start([1, 1000], conds)
    with pytest.raises(ValueError, match="text_token_ids is empty"):
        turbo_gen.start([], conds)
    assert turbo_gen.pool.free_slots == 3
    sessions = [turbo_gen.start(text, conds) for _ in range(3)]
    with pytest.raises(NoFreeSlotError):
        turbo_gen.start(text, conds)
    for s in sessions:
        s.close()


def test_batched_decode_rows_equal_solo_steps(turbo_gen, golden_t3, golden_request):
    """Rows of different requests at different positions, advanced by one decode_rows call over the
    whole pool, give each request's solo logits (the interface of the batched tick)."""
    text, conds = golden_request
    a = turbo_gen.start(text, conds, TurboSamplingParams(seed=1))
    b = turbo_gen.start(text[:5], conds, TurboSamplingParams(seed=2, top_k=50, temperature=1.3))
    a.step(), a.step(), b.step()  # a: 2 samples in, b: 1 (different positions)
    pool, g = turbo_gen.pool, turbo_gen
    k = [t.clone()[:, 0] for t in pool.k]  # per layer [slots, H, max_len, hd] (ROWS_PER_REQUEST = 1)
    v = [t.clone()[:, 0] for t in pool.v]
    idle = pool._free[-1]  # a free slot rides along at position 0 (its cache is overwritten by any prefill)
    tokens = torch.zeros(pool.max_slots, dtype=torch.long)
    pos = torch.zeros(pool.max_slots, dtype=torch.long)
    last = {a.slot: 7, b.slot: 9, idle: 0}
    for slot, s in ((a.slot, a), (b.slot, b), (idle, None)):
        tokens[slot], pos[slot] = last[slot], (int(s._pos) if s else 0)
    visible = (g.positions[None, :] <= pos[:, None]).view(-1, 1, 1, g.max_len)  # [slots, 1, 1, max_len]
    with torch.no_grad():
        batched = golden_t3.decode_rows(tokens, pos, visible, k, v)  # [slots, V]
    a.feed(torch.tensor([7]))
    b.feed(torch.tensor([9]))
    assert rel_l2(batched[a.slot], a.logits[0]) < 1e-6 and rel_l2(batched[b.slot], b.logits[0]) < 1e-6
    for layer in range(len(k)):  # the batched call wrote each row's K at its own position
        p = int(pos[a.slot])
        assert rel_l2(k[layer][a.slot, :, p], pool.k[layer][a.slot, 0, :, p]) < 1e-6
    # the sampler over those rows, each with its own parameters, matches each session's own chain
    rows = RowParams.from_params([a.params, b.params])
    seen = torch.cat([a._seen, b._seen])
    noise = torch.ones(2, batched.shape[-1])
    out = next_tokens(batched[[a.slot, b.slot]], rows, seen, torch.tensor([False, False]), noise, g.control_ids)
    for i, s in enumerate((a, b)):
        solo = next_tokens(s.logits, s._rows, s._seen, s._first, noise[:1], g.control_ids)
        assert rel_l2(out.probs[i], solo.probs[0]) < 1e-5
    a.close()
    b.close()
