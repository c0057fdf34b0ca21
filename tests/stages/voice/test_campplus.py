"""Golden `campplus_xvector`: the Kaldi fbank, its mean, every CAMPPlus block, and the x-vector."""
from __future__ import annotations

import pytest
import torch

from stages.voice.fbank import campplus_features, kaldi_fbank
from tests.golden import cases, load_case, rel_l2, tolerance

CASE = "campplus_xvector"
BLOCKS = ["head_out", "tdnn_out", "transit1_out", "transit2_out", "transit3_out", "stats_out"]


@pytest.fixture(scope="module")
def case():
    return load_case(CASE)


@pytest.fixture(scope="module")
def wav16(case):
    return (case["pcm16"].float() / 32768)[0]  # [-1, 1] floats, as embed_ref passes them


def test_fbank(case, wav16):
    fbank = kaldi_fbank(wav16)
    assert fbank.shape == (cases()[CASE]["scalars"]["fbank_options"]["frames"], 80)  # 1 + (L - 400) // 160
    assert rel_l2(fbank, case["fbank"]) < tolerance(CASE)
    assert rel_l2(fbank.mean(dim=0, keepdim=True), case["fbank_mean"]) < tolerance(CASE)


@pytest.fixture(scope="module")
def run(golden_models, wav16):
    trace = {}
    return golden_models.campplus(campplus_features(wav16), trace), trace


@pytest.mark.parametrize("block", BLOCKS)
def test_every_block_from_the_waveform(run, case, block):
    assert rel_l2(run[1][block], case[block]) < tolerance(CASE)


@pytest.mark.parametrize("block", BLOCKS)
def test_every_block_from_the_reference_fbank(golden_models, case, block):
    """Isolates the network from the front end: the reference's own features in."""
    trace = {}
    golden_models.campplus((case["fbank"] - case["fbank_mean"])[None], trace)
    assert rel_l2(trace[block], case[block]) < tolerance(CASE)


def test_xvector(run, case):
    emb = run[0]
    assert emb.shape == (1, 192) and emb.dtype == torch.float32
    assert rel_l2(emb, case["embedding"]) < tolerance(CASE)


def test_too_few_frames_is_an_error(golden_models):
    with pytest.raises(ValueError, match="at least 400 samples"):
        kaldi_fbank(torch.zeros(399))
    with pytest.raises(ValueError, match="at least 3 fbank frames"):
        golden_models.campplus(torch.zeros(1, 2, 80))
