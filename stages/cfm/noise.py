"""Position-indexed initial noise for the CFM solver; used by `Flow.infer` and the streaming CFM stage.

The value at mel frame i depends only on (seed, i): the timeline is cut into fixed blocks of
BLOCK_FRAMES frames and block b is drawn from a generator seeded from (seed, b). So a frame gets
the same noise whether the whole utterance is solved at once or re-solved chunk by chunk, in any
order — streaming output can match the one-shot output, and nothing depends on a global RNG.
Frame 0 is the first prompt frame: positions index [prompt frames][generated frames].
"""
from __future__ import annotations

import hashlib

import torch

BLOCK_FRAMES = 64  # frames drawn per generator seeding (1.28 s at 50 Hz): cheap to redraw, few seedings per query
_DOMAIN = b"chatterbox-cfm-noise-v1"  # hash domain tag: changing the recipe must change this tag


def _block_seed(seed: int, block: int) -> int:
    """A 63-bit generator seed from (seed, block), stable across machines and Python runs."""
    h = hashlib.blake2b(digest_size=8)
    h.update(_DOMAIN)
    h.update(int(seed).to_bytes(16, "little", signed=True))
    h.update(int(block).to_bytes(8, "little", signed=False))
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


class NoiseSource:
    """Standard-normal noise [n_mels, frames] addressed by absolute mel-frame position."""

    def __init__(self, seed: int, n_mels: int = 80):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if not -(1 << 127) <= seed < (1 << 127):
            raise ValueError("seed must fit in 128 bits")
        self.seed = seed
        self.n_mels = n_mels

    def _block(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_block_seed(self.seed, index))
        return torch.randn(self.n_mels, BLOCK_FRAMES, generator=g)  # [n_mels, BLOCK_FRAMES] float32 CPU

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """Noise of frames start..stop-1.  # [n_mels, stop - start] float32 on CPU"""
        if start < 0 or stop < start:
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        if stop == start:
            return torch.zeros(self.n_mels, 0)
        first, last = start // BLOCK_FRAMES, (stop - 1) // BLOCK_FRAMES
        span = torch.cat([self._block(b) for b in range(first, last + 1)], dim=1)  # [n_mels, k*BLOCK_FRAMES]
        offset = start - first * BLOCK_FRAMES
        return span[:, offset : offset + (stop - start)].contiguous()

    def __repr__(self) -> str:
        return f"NoiseSource(seed={self.seed}, n_mels={self.n_mels})"
