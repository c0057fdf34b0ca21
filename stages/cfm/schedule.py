"""The streaming chunk schedule: how many tokens each CFM call emits, and how much context it re-runs.

A plain frozen config; the per-request position in the schedule lives in the request's
CFMStream, never here, so one request's progress cannot leak into another's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator, Mapping

PRE_LOOKAHEAD_TOKENS = 3  # the encoder's pre-lookahead conv reads 3 tokens to the right of each token
ALL = "all"  # window value: no limit (recompute from the start / use the whole prompt)

# Limits that keep one flow call bounded (a hop of 200 tokens is 8 s of audio).
MAX_HOP_LIMIT = 200
MAX_EXTRA_LOOKAHEAD = 50


@dataclass(frozen=True)
class ChunkSchedule:
    """Knobs of streaming synthesis (see docs/streaming.md for the trade-offs, benchmarks/ for figures).

    first_chunk_tokens: tokens in the first emitted chunk (drives time to first audio).
    growth: each later hop is the previous one times this (>= 1), rounded up ...
    max_hop_tokens: ... and capped here (later chunks can be larger: the player has audio buffered).
    extra_lookahead_tokens: tokens of right context beyond the 3 the encoder needs (fidelity vs latency).
    left_context_tokens: already-emitted tokens re-run before each hop (int, or "all" = from the start).
    prompt_tokens: how many of the voice prompt's last tokens each streaming call includes (int or "all").
    n_timesteps: Euler steps of the flow solver.
    first_chunk_timesteps: Euler steps of the first chunk's call only (None = n_timesteps): a first-audio
        knob, fewer steps for the chunk the listener waits on (docs/gpu.md, first-audio tuning).
    vocoder_lookahead_frames: mel frames the vocoder holds back before emitting a sample
        ("exact" = its whole right receptive field, so streamed audio equals whole-utterance vocoding).
    """

    first_chunk_tokens: int = 4
    growth: float = 2.0
    max_hop_tokens: int = 32
    extra_lookahead_tokens: int = 0
    left_context_tokens: int | str = 32
    prompt_tokens: int | str = 50  # 2 s of the voice prompt: ~same fidelity as all 157, half the cost (docs/streaming.md)
    n_timesteps: int = 10
    vocoder_lookahead_frames: int | str = "exact"
    first_chunk_timesteps: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"chunk schedule: {name} {why}, got {getattr(self, name)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.first_chunk_tokens) or not 1 <= self.first_chunk_tokens <= MAX_HOP_LIMIT:
            raise bad("first_chunk_tokens", f"must be an integer in [1, {MAX_HOP_LIMIT}]")
        if not isinstance(self.growth, (int, float)) or isinstance(self.growth, bool) or not (1.0 <= self.growth <= 16.0):
            raise bad("growth", "must be a number in [1, 16]")
        if not is_int(self.max_hop_tokens) or not self.first_chunk_tokens <= self.max_hop_tokens <= MAX_HOP_LIMIT:
            raise bad("max_hop_tokens", f"must be an integer in [first_chunk_tokens, {MAX_HOP_LIMIT}]")
        if not is_int(self.extra_lookahead_tokens) or not 0 <= self.extra_lookahead_tokens <= MAX_EXTRA_LOOKAHEAD:
            raise bad("extra_lookahead_tokens", f"must be an integer in [0, {MAX_EXTRA_LOOKAHEAD}]")
        for name in ("left_context_tokens", "prompt_tokens"):
            v = getattr(self, name)
            if v != ALL and (not is_int(v) or v < 0):
                raise bad(name, f"must be a non-negative integer or {ALL!r}")
        if not is_int(self.n_timesteps) or not 1 <= self.n_timesteps <= 100:
            raise bad("n_timesteps", "must be an integer in [1, 100]")
        v = self.first_chunk_timesteps
        if v is not None and (not is_int(v) or not 1 <= v <= 100):
            raise bad("first_chunk_timesteps", "must be None or an integer in [1, 100]")
        v = self.vocoder_lookahead_frames
        if v != "exact" and (not is_int(v) or v < 0):
            raise bad("vocoder_lookahead_frames", "must be a non-negative integer or 'exact'")

    def hops(self) -> Iterator[int]:
        """Hop sizes in tokens: first_chunk_tokens, then growing by `growth` up to max_hop_tokens, forever."""
        hop = float(self.first_chunk_tokens)
        while True:
            yield min(self.max_hop_tokens, int(math.ceil(hop - 1e-9)))
            hop = min(float(self.max_hop_tokens), hop * self.growth)

    @property
    def lookahead_tokens(self) -> int:
        """Tokens that must exist beyond a hop before it can be emitted."""
        return PRE_LOOKAHEAD_TOKENS + self.extra_lookahead_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], base: "ChunkSchedule | None" = None) -> "ChunkSchedule":
        """A schedule from request parameters (keys = field names); unknown keys are ignored."""
        base = base or cls()
        names = {f.name for f in fields(cls)}
        return cls(**{**base.to_dict(), **{k: v for k, v in params.items() if k in names and v is not None}})


# Per-model defaults (stages/common/layout.py names the families). Turbo's meanflow decoder is
# distilled for 2 solver steps; the other knobs were re-chosen with benchmarks/bench_streaming.py
# at turbo-small (benchmarks/results/streaming-turbo-*.md, docs/streaming.md).
DEFAULT_SCHEDULES = {
    "chatterbox": ChunkSchedule(),
    # 150 of the voice's 250 prompt tokens: mel rel L2 to offline 0.046 against 0.126 at 50 (`all`: 0.056),
    # at ~2x the first chunk's flow cost, which at 2 one-row steps is still a fraction of a base chunk's
    "turbo": ChunkSchedule(n_timesteps=2, prompt_tokens=150),
}


def default_schedule(model: str = "chatterbox") -> ChunkSchedule:
    """The schedule a request of this model family gets for every knob it does not set."""
    try:
        return DEFAULT_SCHEDULES[model]
    except KeyError:
        raise ValueError(f"no schedule defaults for model {model!r}") from None
