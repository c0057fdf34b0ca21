"""A stage process's view of the voice store: a request's `voice` name -> (cache key, that stage's part), in a bounded LRU.

Each stage that conditions on the voice holds one `StoredVoices` (T3: stages/t3/voices.py,
CFM: stages/cfm/voices.py) with its own loader, which reads only that stage's tensors.

On every request the voice's manifest (one small JSON) is read again, and the part's content
hash in it is the LRU key: a name re-recorded with `voice add --force` has a new hash, so it
is loaded afresh and never served stale, while every later request with an unchanged voice
reads nothing but the manifest. Voices with equal tensors share an entry whatever their
names. A name the store does not hold, a damaged voice, or a voice made for the other model
family raises VoiceStoreError (a ValueError) naming the voice: that request fails, nothing else.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Generic, Hashable, TypeVar

from stages.voice.store import DEFAULT_VOICE, VoiceStore, VoiceStoreError, store_for

# Voices kept per stage process. One entry is small (T3: ~1 KB; CFM: a 10 s prompt mel,
# 500 x 80 float32 = 160 KB), so the bound is about a working set of voices in use at once;
# a miss costs one lazy safetensors read (~0.3 ms).
DEFAULT_VOICE_CACHE_SIZE = 16

T = TypeVar("T")


class StoredVoices(Generic[T]):
    """`default` (or None) -> the checkpoint's voice; any other name -> the stored voice's part, cached by content hash.

    `load(store, name)` returns (part, key) for a stored voice (VoiceStore.load_t3 / load_cfm
    plus any device move); `part` is the manifest's hash it keys on ("t3" or "cfm"); `family` is
    the stage's model family, checked on every request before the cache (None: any).
    """

    def __init__(self, default: T, default_key: Hashable, root: str | Path | None,
                 load: Callable[[VoiceStore, str], tuple[T, str]], part: str, size: int = DEFAULT_VOICE_CACHE_SIZE,
                 family: str | None = None):
        if size < 1:
            raise ValueError(f"voice cache size must be >= 1, got {size}")
        self.default, self.default_key = default, default_key
        self.root = Path(root) if root is not None else None
        self.load, self.part, self.size, self.family = load, part, size, family
        self.entries: OrderedDict[str, T] = OrderedDict()
        self.loads = self.hits = 0
        self._lock = threading.Lock()  # a stage resolves in its loop thread; the lock keeps other callers safe

    def resolve(self, name: str | None) -> tuple[Hashable, T]:
        if name is None or name == DEFAULT_VOICE:
            return self.default_key, self.default
        if self.root is None:
            raise VoiceStoreError(f"unknown voice {name!r}: this stage has no voices folder (only {DEFAULT_VOICE!r})")
        store = store_for(self.root, name)
        # unknown / invalid / unreadable / the other family's: names the voice
        key = store.info(name).check_family(self.family).manifest["hash"].get(self.part)
        with self._lock:
            if key in self.entries:
                self.hits += 1
                self.entries.move_to_end(key)
                return key, self.entries[key]
        value, key = self.load(store, name)  # checked against the hash it returns (the voice may change meanwhile)
        with self._lock:
            self.loads += 1
            self.entries[key] = value
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return key, value

    def __len__(self) -> int:
        return len(self.entries)
