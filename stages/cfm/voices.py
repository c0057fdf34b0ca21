"""Which voice a request's flow is conditioned on: the checkpoint's conds.pt `gen` part, or a stored voice's.

The CFM stage loads only its part of a stored voice (prompt tokens, prompt mel aligned to 2
frames per token, CAMPPlus x-vector; stages/voice/store.py `load_cfm`), moves it to the
stage's device once, and keeps it in a bounded LRU keyed by its content hash
(stages/voice/resolve.py).
"""
from __future__ import annotations

from stages.cfm.conds import FlowConditionals
from stages.common.layout import CHATTERBOX

DEFAULT_KEY = "default"  # cache key of the checkpoint's own voice (stored voices key on a sha256)


def store_voices(conds: FlowConditionals, cfg, device, root=None, size: int | None = None, family: str = CHATTERBOX):
    """The CFM stage's resolver: `resolve(name)` -> (key, FlowConditionals on `device`); `default` = `conds`.
    `family`: the stage's model family; voices made for the other one are refused."""
    from stages.voice.resolve import DEFAULT_VOICE_CACHE_SIZE, StoredVoices

    def load(store, name):
        part, key = store.load_cfm(name, cfg, family)
        return part.to(device), key

    return StoredVoices(conds, DEFAULT_KEY, root, load, "cfm", size or DEFAULT_VOICE_CACHE_SIZE, family)
