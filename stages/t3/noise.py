"""Counter-based random draws for T3 sampling: one uniform per (request key, draw index), as pure tensor ops.

A request's k-th token is drawn with u = H(key, k), where the key comes from the request's
seed and H is a fixed integer hash. Nothing is carried from draw to draw and nothing is
shared between requests, so a request's draws never depend on which other requests share
its batch, on the order they were admitted in, or on how many draws the others made; and
since H is integer arithmetic on tensors (no generator object, no host round trip) it can
run inside a captured CUDA graph.

H is Chris Wellons' `lowbias32` integer mixer, chained over the counter and the two 32-bit
halves of the key, then mixed twice more to make 53 bits. All arithmetic is on int64 tensors
holding 32-bit values, with products split so that no intermediate exceeds 2^49 (no signed
overflow anywhere, so CPU and CUDA give the same bits). `mix32_reference` is the same function
on Python ints, for the known-answer test.
"""
from __future__ import annotations

import torch

from stages.common.seeds import derive_seed

MASK32 = 0xFFFFFFFF
MIX_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)  # lowbias32's constants (bias 0.17, Wellons' hash-prospector)
COUNTER_SALT = 0x9E3779B9  # 2^32 / golden ratio: keeps counter 0 away from the mixer's fixed point 0
WORD_SALTS = (0x68E31DA4, 0xB5297A4D)  # distinct salts for the two output words (Squirrel3's noise constants)
UNIT = 2.0 ** -53  # 53 random bits -> a float64 in (0, 1)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32), without an intermediate above 2^49."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on an int64 tensor of 32-bit values (a bijection of [0, 2^32))."""
    x = x ^ (x >> 16)
    x = _mul32(x, MIX_MULTIPLIERS[0])
    x = x ^ (x >> 15)
    x = _mul32(x, MIX_MULTIPLIERS[1])
    return x ^ (x >> 16)


def mix32_reference(x: int) -> int:
    x &= MASK32
    x ^= x >> 16
    x = (x * MIX_MULTIPLIERS[0]) & MASK32
    x ^= x >> 15
    x = (x * MIX_MULTIPLIERS[1]) & MASK32
    return x ^ (x >> 16)


def request_key(seed: int) -> tuple[int, int]:
    """The two 32-bit key words of a request's T3 draws (from its seed, T3's own domain)."""
    s = derive_seed(seed, "t3")
    return s & MASK32, (s >> 32) & MASK32


def uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """keys [B, 2] int64 (32-bit words), counters [B] int64 (draw index) -> [B] float64 in (0, 1)."""
    h = mix32((counters & MASK32) ^ COUNTER_SALT)
    h = mix32(h ^ keys[:, 0])
    h = mix32(h ^ keys[:, 1])
    hi = mix32(h ^ WORD_SALTS[0]) >> 5  # 27 bits
    lo = mix32(h ^ WORD_SALTS[1]) >> 6  # 26 bits
    return ((hi * (1 << 26) + lo).double() + 0.5) * UNIT


def uniform_reference(key: tuple[int, int], counter: int) -> float:
    """`uniforms` for one row, on Python ints (the known-answer test's reference)."""
    h = mix32_reference((counter & MASK32) ^ COUNTER_SALT)
    h = mix32_reference(h ^ key[0])
    h = mix32_reference(h ^ key[1])
    hi, lo = mix32_reference(h ^ WORD_SALTS[0]) >> 5, mix32_reference(h ^ WORD_SALTS[1]) >> 6
    return (hi * (1 << 26) + lo + 0.5) * UNIT
