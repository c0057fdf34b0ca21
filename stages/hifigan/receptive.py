"""Receptive field of HiFT.decode, derived layer by layer (no weights needed).

Used by the streaming vocoder to decide how much left context to re-run and how many
samples to hold back, and checked empirically by tests/stages/hifigan/test_receptive_field.py.

Backward interval arithmetic: an interval [a, b] of positions at a layer's output maps to
the input positions it reads. Edge effects (zero/reflect padding at the very start and end
of the utterance) are ignored: they only matter at the true boundaries, where the
streamer has no more context anyway.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import HiFTConfig
from .generator import CONV_PRE_KERNEL
from .layers import SnakeResBlock

Interval = tuple[int, int]


@dataclass(frozen=True)
class DecodeReceptiveField:
    mel_left_frames: int  # mel frames before frame m that samples of frame m read
    mel_right_frames: int  # mel frames after frame m that samples of frame m read
    source_left_samples: int  # source samples before sample n that sample n reads (max over n)
    source_right_samples: int  # source samples after sample n that sample n reads (max over n)
    window_left_frames: int  # frames of (mel + source) context a decode window needs before its kept frames
    window_right_frames: int  # frames of (mel + source) lookahead after its kept frames


def _widen(iv: Interval, left: int, right: int | None = None) -> Interval:
    return iv[0] - left, iv[1] + (left if right is None else right)


def _conv_transpose_in(iv: Interval, u: int, k: int, p: int) -> Interval:
    """Output t of ConvTranspose(stride u, kernel k, padding p) reads inputs i with t = i*u - p + j, 0 <= j < k."""
    return math.ceil((iv[0] + p - k + 1) / u), (iv[1] + p) // u


def _strided_conv_in(iv: Interval, stride: int, k: int, p: int) -> Interval:
    """Output t of Conv(stride, kernel k, padding p) reads inputs t*stride - p .. t*stride - p + k - 1."""
    return iv[0] * stride - p, iv[1] * stride - p + k - 1


def _sample_dependencies(cfg: HiFTConfig, n: int) -> tuple[Interval, Interval]:
    """(mel frames, source samples) that output sample n of decode reads."""
    half = cfg.istft_n_fft // 2  # center=True padding of both STFTs
    iv: Interval = (math.ceil((n + half - cfg.istft_n_fft + 1) / cfg.istft_hop), (n + half) // cfg.istft_hop)
    iv = _widen(iv, CONV_PRE_KERNEL // 2)  # conv_post
    stft_frames: list[Interval] = []
    n_stages = len(cfg.upsample_rates)
    res_reach = max(SnakeResBlock.reach(k, cfg.resblock_dilations) for k in cfg.resblock_kernel_sizes)
    for i in reversed(range(n_stages)):
        iv = _widen(iv, res_reach)  # mean of the parallel ResBlocks
        # Source branch: source_resblocks[i] then source_downs[i] onto the STFT frames.
        src = _widen(iv, SnakeResBlock.reach(cfg.source_resblock_kernel_sizes[i], cfg.resblock_dilations))
        d = math.prod(cfg.upsample_rates[i + 1:])
        stft_frames.append(src if d == 1 else _strided_conv_in(src, d, 2 * d, d // 2))
        if i == n_stages - 1:
            iv = (iv[0] - 1, iv[1] - 1)  # ReflectionPad1d((1, 0)) shifts by one position
        u, k = cfg.upsample_rates[i], cfg.upsample_kernel_sizes[i]
        iv = _conv_transpose_in(iv, u, k, (k - u) // 2)
    mel = _widen(iv, CONV_PRE_KERNEL // 2)  # conv_pre
    lo = min(f[0] for f in stft_frames) * cfg.istft_hop - half
    hi = max(f[1] for f in stft_frames) * cfg.istft_hop - half + cfg.istft_n_fft - 1
    return mel, (lo, hi)


def decode_receptive_field(cfg: HiFTConfig) -> DecodeReceptiveField:
    """Worst case over the samples of one mel frame (deep inside a long utterance)."""
    hop = cfg.hop_samples
    m = 1000  # any frame far from both ends
    mel_l = mel_r = src_l = src_r = win_l = win_r = 0
    for n in range(m * hop, (m + 1) * hop):
        (a, b), (s0, s1) = _sample_dependencies(cfg, n)
        mel_l, mel_r = max(mel_l, m - a), max(mel_r, b - m)
        src_l, src_r = max(src_l, n - s0), max(src_r, s1 - n)
        # decode takes mel and source over the same frames, so a window must cover both reaches.
        win_l, win_r = max(win_l, m - min(a, s0 // hop)), max(win_r, max(b, s1 // hop) - m)
    return DecodeReceptiveField(mel_l, mel_r, src_l, src_r, win_l, win_r)
