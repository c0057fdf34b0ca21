"""The analytic receptive field of decode / predict_f0, checked by perturbation in float64."""
from __future__ import annotations

import torch

HOP = 480  # samples per mel frame

T = 40  # frames: long enough that frame 20's influence never reaches the utterance edges
J = 20  # perturbed frame


def _inputs():
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(1, 80, T, generator=g, dtype=torch.float64) * 0.5
    src = 0.05 * torch.randn(1, 1, T * HOP, generator=g, dtype=torch.float64)
    return mel, src


def test_decode_mel_context(golden_hift64, tiny_cfg):
    left, right = tiny_cfg.decode_context_frames()
    assert (left, right) == (14, 14)
    mel, src = _inputs()
    base = golden_hift64.decode(mel, src)
    mel2 = mel.clone()
    mel2[..., J] += 1.0
    changed = torch.nonzero((golden_hift64.decode(mel2, src) - base)[0] != 0)[:, 0]
    # Frame J may only affect samples of frames J-right .. J+left, and the bound is tight.
    assert changed.min().item() // HOP == J - right
    assert changed.max().item() // HOP == J + left


def test_decode_source_context(golden_hift64, tiny_cfg):
    left, right = tiny_cfg.decode_context_source_samples()
    mel, src = _inputs()
    base = golden_hift64.decode(mel, src)
    for n in (J * HOP, J * HOP + 123, J * HOP + 479):
        src2 = src.clone()
        src2[..., n] += 1.0
        changed = torch.nonzero((golden_hift64.decode(mel, src2) - base)[0] != 0)[:, 0]
        # Source sample n may only affect outputs m with m - left <= n <= m + right.
        assert changed.min().item() >= n - right and changed.max().item() <= n + left
        assert changed.max().item() - changed.min().item() > 0.9 * (left + right)  # close to tight


def test_f0_context(golden_hift64, tiny_cfg):
    k = tiny_cfg.f0_context_frames()
    mel, _ = _inputs()
    mel2 = mel.clone()
    mel2[..., J] += 1.0
    changed = torch.nonzero((golden_hift64.predict_f0(mel2) - golden_hift64.predict_f0(mel))[0] != 0)[:, 0]
    assert changed.min().item() == J - k and changed.max().item() == J + k


def test_windowed_decode_equals_whole(golden_hift64, tiny_cfg):
    """The streaming recipe: decode [a - L, b + R) and keep frames [a, b) == whole-utterance decode."""
    left, right = tiny_cfg.decode_window_context_frames()
    assert (left, right) == (15, 15)
    mel, src = _inputs()
    whole = golden_hift64.decode(mel, src)
    for a, b in ((0, 6), (6, 9), (9, 25), (25, T)):  # edges clip the context at the utterance ends
        lo, hi = max(0, a - left), min(T, b + right)
        out = golden_hift64.decode(mel[..., lo:hi], src[..., lo * HOP : hi * HOP])
        kept = out[:, (a - lo) * HOP : (b - lo) * HOP]
        assert torch.allclose(kept, whole[:, a * HOP : b * HOP], rtol=0, atol=1e-12), (a, b)
