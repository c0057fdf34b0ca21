"""Request parameters: the flat map a request carries, parsed and validated in one place.

Used by every stage process (each takes the part it needs) and by the front ends that accept
requests (the coordinator, the single-process path) to validate before any work starts.

Sampling parameters go to T3 (stages.t3.sampling.SamplingParams), schedule parameters to
the CFM and vocoder streams (stages.cfm.schedule.ChunkSchedule), `voice` to every stage that
conditions on the voice (each resolves the name against its own store). The seed is resolved
once, by whoever accepts the request, so every stage derives its randomness from it.
`continuation` (a bool, default False) marks a request that continues a stream already
playing, e.g. segment k > 0 of a long-form request: its first chunk does not take the
first-chunk priority lane of CFM and HiFiGAN (stages/common/lanes.py). It changes no audio.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from stages.cfm.schedule import ChunkSchedule
from stages.t3.sampling import SamplingParams

VOICE = "voice"  # the request parameter naming the voice
DEFAULT_VOICE = "default"  # the name of the checkpoint's own voice (same as no voice)
MAX_VOICE_CHARS = 64  # voice names are short identifiers
CONTINUATION = "continuation"  # the request parameter marking a continuation (no first-chunk priority)


def check_voice(value: Any) -> str | None:
    """The `voice` parameter: None or a non-empty string of at most MAX_VOICE_CHARS (ValueError names it)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_VOICE_CHARS:
        shown = repr(value) if not isinstance(value, str) or len(value) <= MAX_VOICE_CHARS else f"a {len(value)}-character string"
        raise ValueError(f"voice must be None or a name of 1-{MAX_VOICE_CHARS} characters, got {shown}")
    return value


@dataclass(frozen=True)
class RequestParams:
    """Everything one request asks for, parsed and validated in one place."""

    sampling: SamplingParams  # seed always resolved
    schedule: ChunkSchedule
    voice: str | None = None  # a stored voice's name; None (or DEFAULT_VOICE) = the checkpoint's own voice
    continuation: bool = False  # continues a stream already playing: no first-chunk priority lane

    @property
    def seed(self) -> int:
        return self.sampling.seed


def parse_params(params: Mapping[str, Any] | None, default_schedule: ChunkSchedule | None = None) -> RequestParams:
    """Request parameters (flat map, as on the wire) -> validated RequestParams. ValueError names the field."""
    params = dict(params or {})
    names = {f.name for f in fields(SamplingParams)}
    sched_names = {f.name for f in fields(ChunkSchedule)}
    unknown = sorted(set(params) - names - sched_names - {VOICE, CONTINUATION})
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
    sampling = SamplingParams(**{k: v for k, v in params.items() if k in names})
    sampling.validate()
    sampling = replace(sampling, seed=sampling.resolved_seed())
    schedule = ChunkSchedule.from_params(params, default_schedule)
    return RequestParams(sampling, schedule, check_voice(params.get(VOICE)), is_continuation(params))


def is_continuation(params: Mapping[str, Any] | None) -> bool:
    """The `continuation` parameter: absent/None -> False, else it must be a bool (ValueError names it)."""
    value = (params or {}).get(CONTINUATION)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"continuation must be true or false, got {value!r}")
    return value


def resolve_params(params: Mapping[str, Any] | None, default_schedule: ChunkSchedule | None = None) -> dict[str, Any]:
    """Validate and return the flat parameters with the seed filled in (what travels to the stages)."""
    req = parse_params(params, default_schedule)
    return {**dict(params or {}), "seed": req.seed}
