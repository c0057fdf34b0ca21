"""The voice-prefix cache: KV of the conditioning positions per (voice key, exaggeration), in a bounded LRU.

The conditioning positions (speaker embedding, perceiver over the prompt tokens, emotion =
exaggeration) are the same for every request with the same voice and exaggeration, and they
come first in the sequence, so their keys and values do not depend on the text. The tick
computes them once (`TickModel.prefix`), keeps them here, and admits a request by copying
them into its slot and prefilling only the text and the start tokens.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

import torch

# Entries kept: distinct (voice, exaggeration) pairs in use at once. One entry is
# 2 x layers x kv_heads x 34 x head_dim values (8.4 MB at chatterbox fp32, 4.2 MB bf16), so
# the bound costs at most ~134 MB there; a miss costs one 34-position forward.
DEFAULT_PREFIX_CACHE_SIZE = 16


@dataclass(frozen=True)
class Prefix:
    k: list[torch.Tensor]  # per layer [1 or R, kv_heads, C, head_dim]
    v: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.k[0].shape[2]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class PrefixCache:
    def __init__(self, size: int = DEFAULT_PREFIX_CACHE_SIZE):
        if size < 1:
            raise ValueError(f"prefix cache size must be >= 1, got {size}")
        self.size = size
        self._entries: OrderedDict[Hashable, Prefix] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], Prefix]) -> Prefix:
        """The prefix of `key`, computed (and the least recently used entry evicted) on a miss."""
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry
        self.misses += 1
        entry = compute()
        self._entries[key] = entry
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def clear(self) -> None:
        self._entries.clear()
