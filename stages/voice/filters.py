"""Mel filterbanks of the voice-cloning feature extractors, in the reference libraries' exact arithmetic.

Two different filterbanks feed the conditioning models:

* `slaney_mel_filters` -- librosa.filters.mel (Slaney scale, area normalisation) as the
  S3Tokenizer (128 bins, stored in s3gen.safetensors as `tokenizer._mel_filters`) and the
  VoiceEncoder (40 bins) build it. `stages/hifigan/mel.py` has the same construction rounded
  to float32 once; librosa rounds twice (the triangles into a float32 array, then the
  normalisation multiplied in float64 and stored back into float32), which moves some
  weights by one ulp. The built-in tokenizer must be bit-identical to the checkpoint's
  buffer, so this one follows librosa's steps, in numpy float64 like librosa.
* `kaldi_mel_banks` -- torchaudio.compliance.kaldi.get_mel_banks (Kaldi's mel scale
  1127 ln(1 + f/700), triangles in mel space), computed in float32 like torchaudio, for the
  CAMPPlus fbank.

Written out instead of imported: librosa pulls numba, llvmlite, scipy and scikit-learn, and
torchaudio has no wheel for this project's torch build (see stages/hifigan/mel.py); each
function is a dozen lines of arithmetic, checked bit for bit against the reference's buffers.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

# Slaney mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0  # start of the log part
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mels
_LOGSTEP = np.log(6.4) / 27.0  # 27 mels per factor 6.4 above 1 kHz


def _hz_to_mel(f: float) -> float:
    return _MIN_LOG_MEL + np.log(f / _MIN_LOG_HZ) / _LOGSTEP if f >= _MIN_LOG_HZ else f / _F_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    freqs = _F_SP * mels
    log_t = mels >= _MIN_LOG_MEL
    freqs[log_t] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_t] - _MIN_LOG_MEL))
    return freqs


@lru_cache(maxsize=8)
def slaney_mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """[n_mels, n_fft//2 + 1] float32, librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=) bit for bit."""
    fmax = sr / 2 if fmax is None else fmax
    fft_hz = np.arange(n_fft // 2 + 1) * (1.0 / (n_fft * (1.0 / sr)))  # numpy.fft.rfftfreq's arithmetic
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))  # band edges
    fdiff = np.diff(mel_hz)
    ramps = np.subtract.outer(mel_hz, fft_hz)  # [n_mels + 2, n_bins]
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))  # 1st rounding
    weights *= (2.0 / (mel_hz[2:n_mels + 2] - mel_hz[:n_mels]))[:, None]  # Slaney area norm, 2nd rounding
    return torch.from_numpy(weights)


def _kaldi_mel(f: torch.Tensor | float):
    return 1127.0 * (1.0 + f / 700.0).log() if isinstance(f, torch.Tensor) else 1127.0 * math.log(1.0 + f / 700.0)


@lru_cache(maxsize=8)
def kaldi_mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_hz: float, high_hz: float) -> torch.Tensor:
    """[num_bins, padded_window // 2 + 1] float32 Kaldi triangles; the Nyquist column is zero (as torchaudio pads it).

    `high_hz <= 0` is an offset from Nyquist (Kaldi's convention). No VTLN warping.
    """
    nyquist = 0.5 * sample_rate
    if high_hz <= 0.0:
        high_hz += nyquist
    if not (0.0 <= low_hz < nyquist and 0.0 < high_hz <= nyquist and low_hz < high_hz):
        raise ValueError(f"bad mel band {low_hz}..{high_hz} Hz for Nyquist {nyquist} Hz")
    mel_low, mel_high = _kaldi_mel(low_hz), _kaldi_mel(high_hz)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)  # [num_bins, 1]; float32 from here on, as torchaudio
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    mel = _kaldi_mel((sample_rate / padded_window) * torch.arange(padded_window / 2)).unsqueeze(0)  # [1, n/2]
    up, down = (mel - left) / (center - left), (right - mel) / (right - center)
    bins = torch.max(torch.zeros(1), torch.min(up, down))  # [num_bins, n/2]
    return torch.nn.functional.pad(bins, (0, 1))  # [num_bins, n/2 + 1]
