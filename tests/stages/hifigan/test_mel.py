"""The 24 kHz log-mel extractor against the golden `mel` case."""
from __future__ import annotations

import pytest
import torch

from stages.hifigan import mel_spectrogram
from stages.hifigan.mel import mel_filterbank
from tests.golden import load_case, rel_l2, tolerance


def test_mel_matches_reference():
    case = load_case("mel")
    mel = mel_spectrogram(case["wav"])
    assert mel.shape == case["mel"].shape == (1, 80, 65)
    assert rel_l2(mel, case["mel"]) <= tolerance("mel", "mel")
    assert (mel - case["mel"]).abs().max().item() <= 1e-3  # README: max_abs 1e-3


def test_mel_accepts_1d_and_batches():
    wav = torch.randn(2, 24_000) * 0.1
    batched = mel_spectrogram(wav)
    assert batched.shape == (2, 80, 50)  # 1 s at 50 frames per second
    assert torch.allclose(mel_spectrogram(wav[1]), batched[1:], atol=1e-5)


def test_filterbank_shape_and_support():
    fb = mel_filterbank()
    assert fb.shape == (80, 961) and fb.dtype == torch.float32
    assert (fb >= 0).all()
    freqs = torch.linspace(0, 12_000, 961)
    assert fb[:, freqs > 8000].abs().max() == 0  # fmax 8 kHz
    assert (fb.sum(1) > 0).all()  # every channel covers at least one bin


def test_too_short_input_is_rejected():
    with pytest.raises(ValueError, match="720"):
        mel_spectrogram(torch.zeros(1, 500))
