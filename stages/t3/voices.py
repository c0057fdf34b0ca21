"""Which voice a request speaks with: a small resolver injected into the T3 worker.

The T3 worker asks its resolver for the request's `voice` parameter and gets back a cache
key and the voice's `T3Conditionals`; the key (with the exaggeration) names the voice's
prefix in the tick's prefix cache, so it must change whenever the voice's tensors change
(a store that lets a name be re-recorded returns e.g. (name, version)). The voice store of
the voice-cloning work plugs in here without touching the tick.
"""
from __future__ import annotations

from typing import Hashable, Mapping, Protocol

from stages.common.params import DEFAULT_VOICE
from stages.t3.conds import T3Conditionals
from stages.t3.config import T3Config


class VoiceResolver(Protocol):
    def resolve(self, name: str | None) -> tuple[Hashable, T3Conditionals]:
        """(cache key, conditionals) of a voice; None or "default" = the checkpoint's voice.
        Raises ValueError(f"unknown voice {name!r}") for a name it does not know."""


class VoiceTable:
    """A fixed set of voices by name; the default resolver knows only the checkpoint's own voice."""

    def __init__(self, voices: Mapping[str, T3Conditionals], cfg: T3Config | None = None):
        if DEFAULT_VOICE not in voices:
            raise ValueError(f"a voice table needs a {DEFAULT_VOICE!r} voice")
        self.voices = dict(voices)
        if cfg is not None:
            for name, conds in self.voices.items():
                conds.check(cfg, f"voice {name!r}")
        # keyed by content: equal voices share a prefix-cache entry, and a key never outlives its tensors
        self.keys = {name: conds.cache_key() for name, conds in self.voices.items()}

    @classmethod
    def default_only(cls, conds: T3Conditionals, cfg: T3Config | None = None) -> "VoiceTable":
        return cls({DEFAULT_VOICE: conds}, cfg)

    def resolve(self, name: str | None) -> tuple[Hashable, T3Conditionals]:
        key = DEFAULT_VOICE if name is None else name
        if key not in self.voices:
            raise ValueError(f"unknown voice {name!r}")
        return self.keys[key], self.voices[key]
