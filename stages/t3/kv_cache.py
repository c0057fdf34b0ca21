"""Static KV cache of the T3 tick: per-layer K/V buffers allocated once, one block of rows per request slot.

Layout: per layer K and V of shape [capacity, kv_heads, max_len, head_dim], where slot s owns
rows s*R .. s*R+R-1 (R = rows per request: 2 with CFG, 1 without). The tick keeps its active
requests in slots 0..n-1 (compact), so a decode step reads the first n*R rows as one plain
view (no gather of the cache) and a CUDA graph captured for a batch size reads fixed addresses.
When a request leaves from the middle, the last slot's rows are moved into the hole (`move`).

`KVCachePool` is the earlier per-session pool (one slot handed out per request), kept for the
Turbo T3's solo session (stages/t3/turbo_generate.py) until Turbo runs on the tick too.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, max_slots: int, rows_per_slot: int,
                 max_len: int, device, dtype):
        if max_slots < 1 or max_len < 1:
            raise ValueError(f"max_slots ({max_slots}) and max_len ({max_len}) must be >= 1")
        self.max_slots, self.rows_per_slot, self.max_len = max_slots, rows_per_slot, max_len
        self.capacity = max_slots * rows_per_slot
        shape = (self.capacity, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def slot_bytes(self) -> int:
        """Bytes of one request slot (K and V, every layer, all its rows, full length)."""
        return self.nbytes * self.rows_per_slot // self.capacity

    def rows(self, first: int, count: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Views of rows first .. first+count-1 of every layer, each [count, kv_heads, max_len, head_dim]."""
        return [t[first:first + count] for t in self.k], [t[first:first + count] for t in self.v]

    def _slot(self, slot: int) -> slice:
        return slice(slot * self.rows_per_slot, (slot + 1) * self.rows_per_slot)

    def write_prefix(self, slot: int, k: list[torch.Tensor], v: list[torch.Tensor]) -> None:
        """Copy a voice prefix (per layer [1 or R, kv_heads, C, head_dim]) into positions 0..C-1 of a slot."""
        rows = self._slot(slot)
        for dst_k, dst_v, pk, pv in zip(self.k, self.v, k, v):
            c = pk.shape[2]
            dst_k[rows, :, :c].copy_(pk.expand(self.rows_per_slot, -1, -1, -1))
            dst_v[rows, :, :c].copy_(pv.expand(self.rows_per_slot, -1, -1, -1))

    def move(self, src: int, dst: int, length: int) -> None:
        """Move positions 0..length-1 of slot src into slot dst (compaction after dst's request left)."""
        s, d = self._slot(src), self._slot(dst)
        for t in self.k + self.v:
            t[d, :, :length].copy_(t[s, :, :length])

    def scrub(self, slot: int) -> None:
        """Zero a slot (after a request whose values went non-finite: a NaN, even masked, poisons attention)."""
        rows = self._slot(slot)
        for t in self.k + self.v:
            t[rows].zero_()


class NoFreeSlotError(RuntimeError):
    """Every slot of the pool is in use; raise `max_slots` or wait for a request to finish."""


class KVCachePool:
    """K and V of shape [slots, rows, kv_heads, max_len, head_dim] per layer, written by index.

    A slot's views keep a fixed address for the life of the pool, so a captured decode graph can
    be replayed for the slot. Slots are reused; stale contents beyond a request's current position
    are never visible (prefill overwrites 0..L-1, decode writes a position before attending to it).
    """

    def __init__(self, cfg, max_slots: int, max_len: int, rows: int, device, dtype):
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
