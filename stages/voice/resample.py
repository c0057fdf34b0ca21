"""The two resamplers of the reference's voice conditioning, reproduced exactly.

* `soxr_hq` -- what `librosa.load(sr=...)` / `librosa.resample(res_type="soxr_hq")` do: one
  call of libsoxr's HQ converter (python-soxr, the same library librosa calls), then
  librosa's `fix_length` to ceil(n * target/orig). The ratio is a float64 product, so the
  length can round up by one sample (75,852 samples at 44.1 kHz -> 41,281 at 24 kHz); the
  extra samples are zeros.
* `SincResampler` -- torchaudio.transforms.Resample with its defaults (sinc_interp_hann,
  lowpass_filter_width 6, rolloff 0.99), which `S3Token2Mel.embed_ref` uses to make the
  16 kHz signal of S3Gen's prompt tokens and the CAMPPlus x-vector. Ported because
  torchaudio has no wheel for this project's torch build; it is ~30 lines of torch. It
  keeps torchaudio's arithmetic: the kernel in float64 except the phase term j/new, which
  torchaudio divides as an integer tensor in float32 before adding it (exact for 24k -> 16k,
  new = 2), then rounded to float32 once; the output length is ceil() of a float32.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import soxr
import torch
import torch.nn.functional as F

SOXR_QUALITY = "soxr_hq"  # librosa 0.11's default res_type (load and resample)
LOWPASS_FILTER_WIDTH = 6  # zero crossings of the sinc on each side (torchaudio default)
ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist rate (torchaudio default)


def soxr_hq(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """librosa.resample(y, orig_sr=, target_sr=) with res_type soxr_hq: [n] float32 -> [ceil(n * ratio)] float32."""
    y = np.ascontiguousarray(y, dtype=np.float32)
    if orig_sr == target_sr:
        return y
    n_out = int(np.ceil(y.shape[-1] * (float(target_sr) / orig_sr)))  # librosa's length, float64 ratio
    out = soxr.resample(y, orig_sr, target_sr, quality=SOXR_QUALITY)
    if out.shape[-1] < n_out:
        out = np.pad(out, (0, n_out - out.shape[-1]))
    return np.ascontiguousarray(out[:n_out], dtype=np.float32)


class SincResampler:
    """torchaudio.transforms.Resample(orig_sr, new_sr) with default options: x [..., L] -> [..., ceil(L * new/orig)]."""

    def __init__(self, orig_sr: int, new_sr: int):
        g = math.gcd(orig_sr, new_sr)
        self.orig, self.new = orig_sr // g, new_sr // g  # e.g. 24000 -> 16000: 3 -> 2
        self.kernel, self.width = _sinc_kernel(self.orig, self.new)  # [new, 1, 2*width + orig]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.orig == self.new:
            return x
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [B, L]
        length = x.size(-1)
        padded = F.pad(x, (self.width, self.width + self.orig))  # [B, L + 2*width + orig]
        y = F.conv1d(padded[:, None], self.kernel.to(x.device, x.dtype), stride=self.orig)  # [B, new, L/orig + 1]
        y = y.transpose(1, 2).reshape(x.size(0), -1)  # [B, new * (L/orig + 1)]: phase j at 2m + j
        n_out = math.ceil(float(np.float32(self.new * length / self.orig)))  # torchaudio rounds via a float32 tensor
        return y[:, :n_out].reshape(*shape[:-1], -1)


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int) -> tuple[torch.Tensor, int]:
    """The (new, 1, 2*width + orig) float32 kernel and width of torchaudio's sinc_interp_hann resampler."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig  # [1, 1, K] input taps
    t = torch.arange(0, -new, -1)[:, None, None] / new + idx  # [new, 1, K]; j/new in float32, as torchaudio
    t = (t * base).clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2  # Hann taper over the sinc's support
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    kernel = kernel * (window * (base / orig))
    return kernel.to(torch.float32), width
