"""Golden `s3_tokenizer`: log-mel, the pre-FSQ projection, tokens (exact), and the max_len cut."""
from __future__ import annotations

import pytest
import torch

from tests.golden import cases, load_case, rel_l2, tolerance

CASE = "s3_tokenizer"


@pytest.fixture(scope="module")
def case():
    return load_case(CASE)


def test_tokens_and_intermediates(golden_models, case):
    trace = {}
    tokens = golden_models.tokenizer(case["wav"], trace=trace)
    assert rel_l2(trace["log_mel"], case["log_mel"]) < tolerance(CASE)
    assert rel_l2(trace["project_down_out"], case["project_down_out"]) < tolerance(CASE)
    assert tokens.dtype == torch.int64
    assert torch.equal(tokens, case["tokens"])
    assert tokens.size(1) == int(case["token_lens"][0])


def test_max_len_cuts_the_mel_first(golden_models, case):
    max_len = cases()[CASE]["scalars"]["max_len"]
    assert torch.equal(golden_models.tokenizer(case["wav"], max_tokens=max_len), case["tokens_max_len"])


@pytest.mark.parametrize("samples,tokens", [(16000, 25), (16160, 26), (16800, 27), (401, 1)])
def test_token_count_is_ceil_of_mel_frames_over_4(golden_models, samples, tokens):
    """No padding to 40 ms: frames = L // 160, tokens = ceil(frames / 4) (two stride-2 convs)."""
    wav = 0.1 * torch.sin(torch.arange(samples) * 0.05)
    assert golden_models.tokenizer(wav).shape == (1, tokens)


def test_audio_beyond_the_30_s_window_is_refused(golden_models):
    with pytest.raises(ValueError, match="30 s window"):
        golden_models.tokenizer(torch.zeros(16000 * 31))
