"""Kaldi-compatible log mel filterbank features, as CAMPPlus's extract_feature computes them.

Reference: `torchaudio.compliance.kaldi.fbank(wav[None], num_mel_bins=80)` (torchaudio 2.6.0)
with every other option at its default, then minus the per-bin mean over time. Ported
(torchaudio has no wheel for this project's torch build), with only the options the
reference uses: 16 kHz, 25 ms frames every 10 ms with snip_edges (1 + (L - 400) // 160
frames), dither 0, per-frame DC removal, pre-emphasis 0.97 within each frame, Povey window,
FFT size 512, power spectrum, 80 Kaldi mel bins 20 Hz - 8 kHz, log with a float32-epsilon
floor, no energy column. Every operation is float32 in torchaudio's order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.voice.filters import kaldi_mel_banks

SAMPLE_RATE = 16_000  # Hz
FRAME = 400  # 25 ms
SHIFT = 160  # 10 ms
FFT_SIZE = 512  # next power of two above the frame
PREEMPHASIS = 0.97
POVEY_POWER = 0.85  # Povey window = Hann(periodic=False) ** 0.85
LOW_HZ, HIGH_HZ = 20.0, 0.0  # mel band; 0 = Nyquist
EPS = torch.finfo(torch.float32).eps  # log floor (Kaldi: std::numeric_limits<float>::epsilon())


def kaldi_fbank(wav: torch.Tensor, num_bins: int = 80) -> torch.Tensor:
    """wav [L] float in [-1, 1] at 16 kHz -> [1 + (L - 400) // 160, num_bins] natural-log mel energies."""
    wav = wav.to(torch.float32)
    if wav.numel() < FRAME:
        raise ValueError(f"need at least {FRAME} samples at 16 kHz for one fbank frame, got {wav.numel()}")
    frames = wav.unfold(0, FRAME, SHIFT)  # [m, 400]
    frames = frames - frames.mean(dim=1, keepdim=True)  # DC offset per frame
    prev = F.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]  # x[i-1], x[-1] := x[0]
    frames = frames - PREEMPHASIS * prev
    window = torch.hann_window(FRAME, periodic=False, dtype=torch.float32).pow(POVEY_POWER)
    frames = F.pad(frames * window, (0, FFT_SIZE - FRAME))  # [m, 512]
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [m, 257]
    banks = kaldi_mel_banks(num_bins, FFT_SIZE, float(SAMPLE_RATE), LOW_HZ, HIGH_HZ)  # [bins, 257]
    return torch.max(torch.mm(power, banks.T), torch.tensor(EPS)).log()  # [m, bins]


def campplus_features(wav: torch.Tensor) -> torch.Tensor:
    """wav [L] -> [1, T, 80]: the fbank minus its mean over time (reference extract_feature, one utterance)."""
    feats = kaldi_fbank(wav)
    return (feats - feats.mean(dim=0, keepdim=True))[None]
