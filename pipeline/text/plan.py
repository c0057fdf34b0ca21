"""The plan of a long-form request: its segments, each segment's seed, the pauses and the expected totals.

A plan is pure data, made once from (text, parameters, budget, tokenizer): whoever runs it
(the front-end stitcher in `pipeline/longform.py` today, the coordinator later) runs the
same segments with the same seeds and inserts the same pauses, so the same request seed
gives the same samples on every interface.

Seeds: segment 0 uses the request seed itself (a text that needs one segment sounds
exactly as it did before segmentation existed); segment k > 0 uses
`derive_seed(request seed, "segment:k")`, independent streams that depend only on the
request seed and the segment's position.

What a coordinator version must do with a plan to equal the front-end stitcher byte for
byte: run `plan.segments[k].text` with `plan.segment_params(k)` for every k (a segment's
audio is a function of its text and parameters only), emit them in order under one
request id with `start` continuing across segments, put exactly `plan.pause_samples`
zero samples between consecutive segments, and end with totals
`plan.total_samples(per-segment samples)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pipeline.text.budget import SegmentBudget, TokenCounter
from stages.common.accounting import SAMPLES_PER_TOKEN
from pipeline.text.segment import segment_text

SAMPLE_RATE = 24_000  # Hz, every Chatterbox model's output rate
DEFAULT_SENTENCE_SILENCE_S = 0.2  # pause between segments: a short sentence gap (Piper's default is 0.2 s too)
MAX_SENTENCE_SILENCE_S = 10.0  # anything longer is not a pause between sentences


def segment_seed(request_seed: int, index: int) -> int:
    from stages.common.seeds import derive_seed

    return request_seed if index == 0 else derive_seed(request_seed, f"segment:{index}")


def pause_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Seconds of silence between segments -> an exact sample count; ValueError naming the option."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or not 0 <= seconds <= MAX_SENTENCE_SILENCE_S:
        raise ValueError(f"sentence_silence must be a number of seconds in [0, {MAX_SENTENCE_SILENCE_S:g}], got {seconds!r}")
    return round(seconds * sample_rate)


@dataclass(frozen=True)
class PlannedSegment:
    index: int
    text: str  # what is synthesized
    start: int  # [start, end) in the plan's normalised text
    end: int
    seed: int
    text_tokens: int
    speech_token_cap: int  # max_new_tokens T3 will apply (the request's, or T3's default for this text)


@dataclass(frozen=True)
class LongFormPlan:
    text: str  # the normalised input: "".join(text[s.start:s.end]) == text
    seed: int  # the request seed every segment seed derives from
    params: Mapping[str, Any]  # the resolved request parameters, without the seed
    segments: tuple[PlannedSegment, ...]
    pause_samples: int  # silence between consecutive segments
    sample_rate: int = SAMPLE_RATE
    tail_tokens: int = 0  # tokens the model decodes after each segment's T3 tokens (Turbo: 3 silence tokens)

    def segment_params(self, index: int) -> dict[str, Any]:
        """The parameters of segment `index`'s request (its own seed)."""
        return {**self.params, "seed": self.segments[index].seed}

    @property
    def pause_total(self) -> int:
        return self.pause_samples * max(0, len(self.segments) - 1)

    def offsets(self, segment_samples: Sequence[int]) -> list[int]:
        """Where each segment's first sample sits in the stitched stream."""
        if len(segment_samples) != len(self.segments):
            raise ValueError(f"{len(segment_samples)} segment lengths for {len(self.segments)} segments")
        out, pos = [], 0
        for n in segment_samples:
            out.append(pos)
            pos += n + self.pause_samples
        return out

    def total_samples(self, segment_samples: Sequence[int]) -> int:
        """The stitched stream's length: every segment's samples plus the pauses between them."""
        self.offsets(segment_samples)
        return sum(segment_samples) + self.pause_total

    @property
    def max_samples(self) -> int:
        """The most samples the stream can have (every segment reaching its speech-token cap)."""
        return SAMPLES_PER_TOKEN * sum(s.speech_token_cap + self.tail_tokens for s in self.segments) + self.pause_total

    @property
    def exact_samples(self) -> int | None:
        """The stream's length when it is fixed in advance (ignore_eos: every segment has exactly its cap)."""
        return self.max_samples if self.params.get("ignore_eos") else None


def make_plan(text: str, params: Mapping[str, Any] | None, budget: SegmentBudget, count: TokenCounter,
              pause: int = round(DEFAULT_SENTENCE_SILENCE_S * SAMPLE_RATE)) -> LongFormPlan:
    """Validate the request and plan it. ValueError (naming the problem) for empty text or bad parameters."""
    from stages.common.params import resolve_params
    from stages.cfm.meanflow import N_SILENCE_TOKENS
    from stages.t3.sampling import default_max_new_tokens
    from stages.t3.turbo_sampling import TURBO_MAX_SAMPLES

    if isinstance(pause, bool) or not isinstance(pause, int) or pause < 0:
        raise ValueError(f"pause must be a sample count >= 0, got {pause!r}")
    turbo = budget.model == "turbo"
    resolved = resolve_params(params, model=budget.model if turbo else None)  # validates every field, fixes the seed
    seed = resolved.pop("seed")
    segmentation = segment_text(text, budget, count)
    if not segmentation.segments:
        raise ValueError("text is empty or whitespace only")
    cap = resolved.get("max_new_tokens")
    segments = tuple(
        PlannedSegment(k, s.text, s.start, s.end, segment_seed(seed, k), s.text_tokens,
                       cap if cap is not None else (TURBO_MAX_SAMPLES if turbo else default_max_new_tokens(s.text_tokens)))
        for k, s in enumerate(segmentation.segments))
    return LongFormPlan(segmentation.normalised, seed, resolved, segments, pause, tail_tokens=N_SILENCE_TOKENS if turbo else 0)
