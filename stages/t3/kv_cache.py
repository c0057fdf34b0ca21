"""Static KV cache: per-layer K/V buffers for a pool of request slots, allocated once at full length."""
from __future__ import annotations

import torch

from stages.t3.config import T3Config


class NoFreeSlotError(RuntimeError):
    """Every slot of the pool is in use; raise `max_slots` or wait for a request to finish."""


class KVCachePool:
    """K and V of shape [slots, rows, kv_heads, max_len, head_dim] per layer, written by index.

    A slot's views keep a fixed address for the life of the pool, so a captured decode graph can
    be replayed for the slot. Slots are reused; stale contents beyond a request's current position
    are never visible (prefill overwrites 0..L-1, decode writes a position before attending to it).
    """

    def __init__(self, cfg: T3Config, max_slots: int, max_len: int, rows: int, device, dtype):
        if max_slots < 1 or max_len < 1:
            raise ValueError(f"max_slots ({max_slots}) and max_len ({max_len}) must be >= 1")
        self.max_slots, self.max_len = max_slots, max_len
        shape = (max_slots, rows, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self._free = list(range(max_slots - 1, -1, -1))

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def acquire(self) -> int:
        if not self._free:
            raise NoFreeSlotError(f"all {self.max_slots} T3 KV-cache slots are busy (raise max_slots)")
        return self._free.pop()

    def release(self, slot: int, scrub: bool = False) -> None:
        """Return a slot; `scrub` zeroes it (after a request whose values went non-finite)."""
        if scrub:
            for t in self.k + self.v:
                t[slot].zero_()
        self._free.append(slot)

    def views(self, slot: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer K and V views of one slot, each [rows, kv_heads, max_len, head_dim]."""
        return [t[slot] for t in self.k], [t[slot] for t in self.v]
