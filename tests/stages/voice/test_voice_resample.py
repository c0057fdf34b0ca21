"""Golden `voice_resample`: librosa's soxr_hq (via libsoxr) and torchaudio's sinc resampler, lengths exact."""
from __future__ import annotations

import pytest
import torch

from stages.voice.resample import SincResampler, soxr_hq
from tests.golden import cases, load_case, rel_l2, tolerance

CASE = "voice_resample"


@pytest.fixture(scope="module")
def case():
    return load_case(CASE)


@pytest.mark.parametrize("src,dst,x", [(44100, 24000, "x44"), (24000, 16000, "x24")])
def test_soxr_hq_matches_librosa_resample(case, src, dst, x):
    y = torch.from_numpy(soxr_hq(case[x].numpy(), src, dst))
    ref = case[f"librosa_{src}_to_{dst}"]
    assert y.shape == ref.shape  # fix_length to ceil(n * dst / src)
    assert y.shape[0] == cases()[CASE]["scalars"][f"fix_length_{src}_to_{dst}"]
    assert rel_l2(y, ref) < tolerance(CASE)


def test_sinc_kernel_is_torchaudios(case):
    r = SincResampler(24000, 16000)
    assert (r.orig, r.new, r.width) == (3, 2, 10)
    assert rel_l2(r.kernel, case["kernel_24000_to_16000"]) < tolerance(CASE)


@pytest.mark.parametrize("src,dst,x", [(24000, 16000, "x24"), (44100, 24000, "x44"), (44100, 16000, "x44")])
def test_sinc_resampler_matches_torchaudio(case, src, dst, x):
    y = SincResampler(src, dst)(case[x][None])
    ref = case[f"ta_resample_{src}_to_{dst}"]
    assert y.shape == ref.shape  # [1, ceil(n * new / orig)]
    assert rel_l2(y, ref) < tolerance(CASE)


def test_same_rate_is_untouched(case):
    x = case["x24"].numpy()
    assert soxr_hq(x, 24000, 24000) is not None and (soxr_hq(x, 24000, 24000) == x).all()
    assert SincResampler(16000, 16000)(case["x24"]) is case["x24"]


def test_librosa_length_can_round_up_by_one_zero_sample():
    """75,852 samples at 44.1 kHz -> 41,281 at 24 kHz (the float ratio rounds up); the extra sample is a zero."""
    y = soxr_hq(torch.zeros(75852).numpy() + 0.1, 44100, 24000)
    assert y.shape == (41281,) and y[-1] == 0.0
