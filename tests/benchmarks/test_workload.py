"""The workload and sweep plan: fixed token counts, per-request parameters, the shared baseline cell."""
from benchmarks.harness.workload import BASELINE, MIN_TOKENS, SWEEPS, Workload, plan


def test_fixed_tokens_per_text_and_ignore_eos():
    w = Workload(token_scale=0.25)
    assert [w.tokens_for(i) for i in range(len(w.texts))] == [max(MIN_TOKENS, round(n * 0.25)) for _, n in w.texts]
    p = w.params(1, {"first_chunk_tokens": 8, "concurrency": 4})
    assert p["ignore_eos"] is True and p["max_new_tokens"] == w.tokens_for(1)
    assert p["first_chunk_tokens"] == 8 and "concurrency" not in p
    assert p["seed"] == w.seed + 1
    assert Workload(tokens=12).tokens_for(3) == 12


def test_extra_params_do_not_override_the_swept_knob():
    w = Workload(extra=(("vocoder_lookahead_frames", 4), ("first_chunk_tokens", 2)))
    p = w.params(0, {"first_chunk_tokens": 16})
    assert p["vocoder_lookahead_frames"] == 4 and p["first_chunk_tokens"] == 16


def test_requests_repeat_the_selected_texts():
    assert Workload(text_ids=(0, 2), reps=2).requests() == [0, 2, 0, 2]


def test_plan_varies_one_knob_and_shares_the_baseline():
    cells = plan(SWEEPS)
    assert len(cells) == sum(len(v) for v in SWEEPS.values()) - (len(SWEEPS) - 1)
    assert sum(1 for c in cells if c.knobs == BASELINE) == 1
    for c in cells:
        assert sum(c.knobs[k] != BASELINE[k] for k in BASELINE) <= 1
