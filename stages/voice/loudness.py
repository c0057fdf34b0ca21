"""Loudness normalisation of a Turbo reference recording: the reference's `norm_loudness`, a plain gain to -27 LUFS.

`ChatterboxTurboTTS.prepare_conditionals(norm_loudness=True)` measures the 24 kHz recording's
integrated loudness with pyloudnorm (ITU-R BS.1770-4, K-weighting, 400 ms gated blocks) and
multiplies it by 10^((target - loudness) / 20). The reference skips the step when pyloudnorm
raises (e.g. a clip shorter than one 400 ms block) or the gain is not finite (digital silence
measures -inf LUFS); so does this.
"""
from __future__ import annotations

import math

import numpy as np

TURBO_TARGET_LUFS = -27.0  # the reference's target loudness for Turbo voice prompts


def loudness_gain(samples: np.ndarray, sample_rate: int, target_lufs: float = TURBO_TARGET_LUFS) -> float | None:
    """The gain that brings `samples` [n] to `target_lufs`, or None where the reference skips normalising."""
    import pyloudnorm

    try:
        loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(np.asarray(samples, dtype=np.float64))
    except Exception:  # the reference's `except`: too short to measure, etc.
        return None
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    return gain if math.isfinite(gain) else None


def normalise_loudness(samples: np.ndarray, sample_rate: int, target_lufs: float = TURBO_TARGET_LUFS) -> np.ndarray:
    """samples [n] float32 scaled to `target_lufs` (unchanged where the reference skips)."""
    gain = loudness_gain(samples, sample_rate, target_lufs)
    return samples if gain is None else (samples * np.float32(gain)).astype(np.float32)
