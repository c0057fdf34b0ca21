"""Counter-based draws and the vectorised chain: known answers, the distribution, row independence."""
from __future__ import annotations

import pytest
import torch

from stages.common.params import parse_params
from stages.t3.noise import request_key, uniform_reference, uniforms
from stages.t3.sampling import SamplingParams, SamplingRows, next_token_probs, sample, top_p_filter


def test_uniforms_match_the_python_reference_and_are_in_0_1():
    keys = [request_key(s) for s in (0, 1, 2**62 + 12345, 987654321)]
    counters = [0, 1, 4095, 2**31 + 7]
    got = uniforms(torch.tensor(keys), torch.tensor(counters))
    assert got.dtype == torch.float64
    assert got.tolist() == [uniform_reference(k, c) for k, c in zip(keys, counters)]
    many = uniforms(torch.tensor([request_key(3)] * 20000), torch.arange(20000))
    assert 0 < float(many.min()) and float(many.max()) < 1
    hist = torch.histc(many.float(), bins=10, min=0, max=1)
    assert float(((hist - 2000) ** 2 / 2000).sum()) < 30  # chi-square, 9 dof: p < 0.001 above ~28


def test_a_rows_draw_depends_only_on_its_own_key_and_counter():
    keys = torch.tensor([request_key(s) for s in range(5)])
    counters = torch.tensor([0, 3, 3, 9, 1])
    alone = [float(uniforms(keys[i:i + 1], counters[i:i + 1])) for i in range(5)]
    assert uniforms(keys, counters).tolist() == alone
    assert uniforms(keys[[4, 2]], counters[[4, 2]]).tolist() == [alone[4], alone[2]]


def test_sample_follows_the_probabilities_and_never_picks_zero_mass():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2]])
    u = uniforms(torch.tensor([request_key(1)] * 30000), torch.arange(30000))
    ids = sample(probs.expand(30000, -1), u)
    counts = torch.bincount(ids, minlength=5).double() / 30000
    assert counts[0] == 0 and counts[2] == 0
    assert torch.allclose(counts[[1, 3, 4]], torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.015)
    assert sample(probs, torch.tensor([1 - 2**-53], dtype=torch.float64)).item() == 4  # u near 1: the last id with mass


def test_per_row_parameters_equal_each_row_alone():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 50, generator=g) * 3
    seen = torch.rand(3, 50, generator=g) < 0.2
    params = [SamplingParams(), SamplingParams(temperature=1.3, top_p=0.7, min_p=0.0, repetition_penalty=1.0),
              SamplingParams(cfg_weight=0.0, ignore_eos=True, min_p=0.2)]
    banned = torch.arange(50) >= 45
    together, finite = next_token_probs(logits, seen, SamplingRows.from_params(params), banned)
    assert finite.all()
    for i, p in enumerate(params):
        alone, _ = next_token_probs(logits[i:i + 1], seen[i:i + 1], SamplingRows.from_params([p]), banned)
        assert torch.equal(together[i:i + 1], alone), i
    assert together[2, 45:].sum() == 0 and together[0, 45:].sum() > 0  # only the ignore_eos row masks control ids


def test_top_p_of_one_leaves_a_row_untouched_beside_a_filtered_row():
    logits = torch.tensor([[2.0, 1.0, 0.0, -50.0], [2.0, 1.0, 0.0, -50.0]])
    out = top_p_filter(logits, torch.tensor([[1.0], [0.5]]))
    assert torch.equal(out[0], logits[0]) and torch.isinf(out[1, 1:]).all()


def test_non_finite_logits_are_flagged_per_row():
    logits = torch.zeros(2, 2, 8)
    logits[1, 0, 3] = float("nan")
    _, finite = next_token_probs(logits, torch.zeros(2, 8, dtype=torch.bool),
                                 SamplingRows.from_params([SamplingParams()] * 2))
    assert finite.tolist() == [True, False]


@pytest.mark.parametrize("value", [3, "", "x" * 65, ["a"]])
def test_voice_parameter_is_checked(value):
    with pytest.raises(ValueError, match="voice"):
        parse_params({"voice": value})


def test_voice_parameter_passes_through():
    assert parse_params({"voice": "alice"}).voice == "alice" and parse_params({}).voice is None
