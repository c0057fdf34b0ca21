"""The start-of-utterance trim fade shared by offline synthesis and the streaming vocoder.

Reference: S3Token2Wav.trim_fade. The first 480 samples (20 ms) are silenced and the
next 480 fade in with a raised cosine, to hide spill-over from the reference prompt.
"""
from __future__ import annotations

import torch

N_TRIM = 480  # samples silenced, then as many faded in (one mel frame each)


def trim_fade(n_trim: int = N_TRIM) -> torch.Tensor:
    """[2*n_trim] float32 gain: n_trim zeros then (cos(linspace(pi, 0, n_trim)) + 1) / 2."""
    fade = torch.zeros(2 * n_trim)
    fade[n_trim:] = (torch.cos(torch.linspace(torch.pi, 0, n_trim)) + 1) / 2
    return fade


def apply_trim_fade(wav: torch.Tensor, start_sample: int = 0, n_trim: int = N_TRIM) -> torch.Tensor:
    """Multiply a piece wav [..., S] that starts at `start_sample` of the utterance by the fade (new tensor).

    Pieces that start at or after 2*n_trim are returned unchanged (copied), so a streamer can
    call this on every chunk with its absolute offset.
    """
    out = wav.clone()
    fade = trim_fade(n_trim).to(wav.device, wav.dtype)
    lo, hi = start_sample, min(start_sample + wav.shape[-1], fade.numel())
    if hi > lo:
        out[..., : hi - lo] *= fade[lo:hi]
    return out
