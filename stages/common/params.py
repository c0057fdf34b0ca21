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

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from stages.cfm.schedule import ChunkSchedule, default_schedule
from stages.common.layout import CHATTERBOX, MODEL_KINDS, TURBO
from stages.t3.sampling import SamplingParams
from stages.t3.turbo_sampling import TurboSamplingParams

VOICE = "voice"  # the request parameter naming the voice
DEFAULT_VOICE = "default"  # the name of the checkpoint's own voice (same as no voice)
MAX_VOICE_CHARS = 64  # voice names are short identifiers
SAMPLING = {CHATTERBOX: SamplingParams, TURBO: TurboSamplingParams}  # each family's sampling parameters
# Base-model knobs a Turbo request may carry without effect: the reference's Turbo `generate` accepts
# them and ignores them (it warns), so a client written for the base model keeps working.
TURBO_IGNORED = ("cfg_weight", "exaggeration", "min_p")
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

    sampling: SamplingParams | TurboSamplingParams  # the model family's; seed always resolved
    schedule: ChunkSchedule
    voice: str | None = None  # a stored voice's name; None (or DEFAULT_VOICE) = the checkpoint's own voice
    continuation: bool = False  # continues a stream already playing: no first-chunk priority lane

    @property
    def seed(self) -> int:
        return self.sampling.seed


def parse_params(params: Mapping[str, Any] | None, default_schedule: ChunkSchedule | None = None,
                 model: str | None = None) -> RequestParams:
    """Request parameters (flat map, as on the wire) -> validated RequestParams. ValueError names the field.

    `model` ("chatterbox" = None, or "turbo") picks the sampling parameters and the default schedule."""
    model = model or CHATTERBOX
    if model not in MODEL_KINDS:
        raise ValueError(f"model must be one of {', '.join(MODEL_KINDS)}, got {model!r}")
    params = dict(params or {})
    cls = SAMPLING[model]
    names = {f.name for f in fields(cls)}
    sched_names = {f.name for f in fields(ChunkSchedule)}
    ignored = set(TURBO_IGNORED) if model == TURBO else set()
    unknown = sorted(set(params) - names - sched_names - ignored - {VOICE, CONTINUATION})
    if unknown:
        other = [n for n in unknown if any(n in {f.name for f in fields(c)} for c in SAMPLING.values())]
        hint = f" (not a {model} parameter)" if other else ""
        raise ValueError(f"unknown parameter(s): {', '.join(unknown)}{hint}")
    for name in sorted(ignored & set(params)):  # no effect, but still a number or a client bug
        v = params[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    sampling = cls(**{k: v for k, v in params.items() if k in names})
    sampling.validate()
    sampling = replace(sampling, seed=sampling.resolved_seed())
    schedule = ChunkSchedule.from_params(params, default_schedule or default_schedule_for(model))
    return RequestParams(sampling, schedule, check_voice(params.get(VOICE)), is_continuation(params))


def is_continuation(params: Mapping[str, Any] | None) -> bool:
    """The `continuation` parameter: absent/None -> False, else it must be a bool (ValueError names it)."""
    value = (params or {}).get(CONTINUATION)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"continuation must be true or false, got {value!r}")
    return value


def default_schedule_for(model: str | None) -> ChunkSchedule:
    return default_schedule(model or CHATTERBOX)


def resolve_params(params: Mapping[str, Any] | None, default_schedule: ChunkSchedule | None = None,
                   model: str | None = None) -> dict[str, Any]:
    """Validate and return the flat parameters with the seed filled in (what travels to the stages)."""
    req = parse_params(params, default_schedule, model)
    return {**dict(params or {}), "seed": req.seed}
