"""The long-form plan: segment seeds from the request seed, exact pauses and totals, validation."""
import pytest

from stages.common.seeds import derive_seed
from pipeline.text.budget import base_budget, tokenizer_counter
from pipeline.text.plan import LongFormPlan, make_plan, pause_samples, segment_seed
from stages.t3.text import TextTokenizer

COUNT = tokenizer_counter(TextTokenizer.builtin())
TEXT = " ".join(f"This is sentence {i}, of a long text." for i in range(12))


def plan(text=TEXT, params=None, pause=4800) -> LongFormPlan:
    return make_plan(text, params if params is not None else {"seed": 7}, base_budget(), COUNT, pause)


def test_segment_seeds_derive_from_the_request_seed():
    p = plan()
    assert len(p.segments) > 3 and p.seed == 7
    assert p.segments[0].seed == 7  # a one-segment text sounds exactly as before segmentation
    assert [s.seed for s in p.segments[1:]] == [derive_seed(7, f"segment:{k}") for k in range(1, len(p.segments))]
    assert len({s.seed for s in p.segments}) == len(p.segments)
    assert plan() == p  # deterministic
    assert p.segment_params(2) == {"seed": p.segments[2].seed}
    assert segment_seed(7, 0) == 7


def test_a_random_seed_is_fixed_once_for_the_whole_plan():
    p = plan(params={})
    assert p.segments[0].seed == p.seed and p.segments[1].seed == segment_seed(p.seed, 1)


def test_totals_are_the_segments_plus_the_pauses():
    p = plan(params={"seed": 1, "ignore_eos": True, "max_new_tokens": 5})
    n = len(p.segments)
    assert p.pause_total == 4800 * (n - 1)
    assert p.exact_samples == p.max_samples == n * 5 * 960 + 4800 * (n - 1)
    lengths = [960 * k for k in range(1, n + 1)]
    assert p.total_samples(lengths) == sum(lengths) + 4800 * (n - 1)
    assert p.offsets(lengths)[:3] == [0, 960 + 4800, 960 + 4800 + 1920 + 4800]
    with pytest.raises(ValueError, match="segment lengths"):
        p.total_samples([1, 2])
    q = plan(params={"seed": 1})
    assert q.exact_samples is None
    assert [s.speech_token_cap for s in q.segments] == [50 + 20 * s.text_tokens for s in q.segments]


def test_pause_samples_is_exact_and_validated():
    assert pause_samples(0.2) == 4800 and pause_samples(0) == 0 and pause_samples(1 / 24000) == 1
    for bad in (-0.1, 11, float("nan"), "0.2", True):
        with pytest.raises(ValueError, match="sentence_silence"):
            pause_samples(bad)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="text is empty"):
        plan(" \n ")
    with pytest.raises(ValueError, match="temperature"):
        plan(params={"temperature": 0})
    with pytest.raises(ValueError, match="unknown parameter"):
        plan(params={"colour": "blue"})
    with pytest.raises(ValueError, match="pause"):
        plan(pause=-1)
