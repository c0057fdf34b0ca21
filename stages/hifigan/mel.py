"""24 kHz log-mel extractor (reference: s3gen/utils/mel.py, Matcha-TTS style): wav [B,S] -> [B,80,frames].

Used to turn a reference voice clip into the CFM prompt (`prompt_feat`) and by tests.

The Slaney mel filterbank is written out here instead of imported: librosa (the
reference's source for it) pulls numba, llvmlite and scipy, and torchaudio has no wheel
matching this project's torch build, so neither fits the dependency budget for ~40 lines
of arithmetic. The construction follows librosa.filters.mel's defaults (htk=False: Slaney
mel scale; norm="slaney": each triangle scaled to unit area), computed in float64 and
rounded to float32 once, and is checked against the golden `mel` case.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

SAMPLE_RATE = 24_000  # Hz
N_FFT = 1920  # 80 ms analysis window
WIN_SIZE = 1920  # Hann window length (= n_fft)
HOP = 480  # 20 ms: 50 frames per second, one frame per 480 output samples
N_MELS = 80  # mel channels the CFM and HiFT use
F_MIN = 0.0  # Hz
F_MAX = 8000.0  # Hz
PAD = (N_FFT - HOP) // 2  # 720 reflect-padded samples each side (center=False afterwards)
MAG_EPS = 1e-9  # inside sqrt(re^2 + im^2 + eps)
LOG_FLOOR = 1e-5  # clamp before the natural log

# Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mels at 1 kHz
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    lin = f / _F_SP
    log = _MIN_LOG_MEL + torch.log(torch.clamp(f, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(f >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    lin = _F_SP * m
    log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return torch.where(m >= _MIN_LOG_MEL, log, lin)


@lru_cache(maxsize=8)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = F_MIN, fmax: float = F_MAX) -> torch.Tensor:
    """[n_mels, n_fft//2+1] float32 triangular filters, Slaney scale and area normalisation."""
    fft_hz = torch.linspace(0.0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)  # bin centre frequencies
    edges_mel = torch.linspace(float(hz_to_mel(torch.tensor(fmin, dtype=torch.float64))),
                               float(hz_to_mel(torch.tensor(fmax, dtype=torch.float64))),
                               n_mels + 2, dtype=torch.float64)
    edges_hz = mel_to_hz(edges_mel)  # [n_mels + 2]
    widths = edges_hz[1:] - edges_hz[:-1]  # [n_mels + 1]
    dist = edges_hz[:, None] - fft_hz[None, :]  # [n_mels + 2, n_bins]
    rising = -dist[:-2] / widths[:-1, None]  # [n_mels, n_bins]
    falling = dist[2:] / widths[1:, None]
    tri = torch.clamp(torch.minimum(rising, falling), min=0.0)
    area = 2.0 / (edges_hz[2:] - edges_hz[:-2])  # Slaney: constant energy per channel
    return (tri * area[:, None]).to(torch.float32)


@lru_cache(maxsize=8)
def _hann(win: int, device: str) -> torch.Tensor:
    return torch.hann_window(win, device=device)  # periodic, as torch.hann_window's default


def mel_spectrogram(wav: torch.Tensor) -> torch.Tensor:
    """wav [B, S] or [S] float at 24 kHz -> natural-log mel [B, 80, (S + 2*720 - 1920)//480 + 1]."""
    if wav.dim() == 1:
        wav = wav[None]
    wav = wav.to(torch.float32)
    if wav.shape[-1] <= PAD:
        raise ValueError(f"need more than {PAD} samples for the reflect padding, got {wav.shape[-1]}")
    padded = F.pad(wav[:, None], (PAD, PAD), mode="reflect")[:, 0]  # [B, S + 1440]
    spec = torch.stft(padded, N_FFT, hop_length=HOP, win_length=WIN_SIZE, window=_hann(WIN_SIZE, str(wav.device)),
                      center=False, normalized=False, onesided=True, return_complex=True)  # [B, 961, frames]
    spec = torch.view_as_real(spec)
    magnitude = torch.sqrt(spec.pow(2).sum(-1) + MAG_EPS)  # [B, 961, frames]
    mel = torch.matmul(mel_filterbank().to(wav.device), magnitude)  # [B, 80, frames]
    return torch.log(torch.clamp(mel, min=LOG_FLOOR))
