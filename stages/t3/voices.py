"""Which voice a request speaks with: a small resolver injected into the T3 worker.

The T3 worker asks its resolver for the request's `voice` parameter and gets back a cache
key and the voice's `T3Conditionals`; the key (with the exaggeration) names the voice's
prefix in the tick's prefix cache, so it must change whenever the voice's tensors change
(a store that lets a name be re-recorded returns e.g. (name, version)). The voice store of
the voice-cloning work plugs in here without touching the tick.
"""
from __future__ import annotations

from typing import Hashable, Mapping, Protocol

from stages.common.layout import CHATTERBOX, TURBO
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


def store_voices(conds: T3Conditionals, cfg: T3Config, root=None, size: int | None = None) -> VoiceResolver:
    """The stage's resolver: the checkpoint's voice as `default`, every voice of the store at `root` by name.

    T3 loads only its part of a stored voice (speaker embedding, prompt tokens, stored
    exaggeration; Turbo: the first two), checked against `cfg` (a base or a Turbo T3 config, which
    also picks the family of voices it accepts), and keeps it in a bounded LRU keyed by its content hash.
    """
    from stages.voice.resolve import DEFAULT_VOICE_CACHE_SIZE, StoredVoices

    from stages.t3.turbo_config import TurboT3Config

    family = TURBO if isinstance(cfg, TurboT3Config) else CHATTERBOX  # Turbo's voices have no emotion input
    conds.check(cfg, f"voice {DEFAULT_VOICE!r}")
    return StoredVoices(conds, conds.cache_key(), root, lambda store, name: store.load_t3(name, cfg, family), "t3",
                        size or DEFAULT_VOICE_CACHE_SIZE, family)


def voice_sampling(sampling, conds: T3Conditionals, voice: str | None, given: Mapping):
    """A stored voice speaks with the exaggeration it was made with unless the request gives one.

    The checkpoint's own voice keeps SamplingParams' default (0.5, the reference's), whatever its
    conds.pt stores, so a request without `voice` is unchanged by voice cloning.
    """
    from dataclasses import replace

    if voice is None or voice == DEFAULT_VOICE or "exaggeration" in given or not hasattr(sampling, "exaggeration"):
        return sampling  # (Turbo's sampling has no exaggeration: its T3 has no emotion input)
    return replace(sampling, exaggeration=float(conds.emotion_adv.reshape(-1)[0]))
