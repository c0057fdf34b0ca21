"""Long-form requests inside the coordinator: one public request id, its segments run as internal sub-requests, one stream.

A request whose text exceeds one segment's budget (`pipeline/text/budget.py`), or that asks
for it with `longform: true`, is planned here (`pipeline/text/plan.py`) instead of going to
T3 as it is. What every interface then sees (in-process API, `serve` clients, subscribers,
the HTTP server) is exactly one request:

- segment k runs in the stages under an internal id `<base>/<k>` (never published) with
  `plan.segment_params(k)`; segment k > 0 also carries `continuation: true`, so its first
  chunk does not take CFM's and HiFiGAN's first-chunk priority lane (stages/common/lanes.py):
  audio is already playing, and a new request's first chunk should not wait behind it;
- the segments' audio is republished in order under the public id, `start` counting the
  public stream's samples, with exactly `plan.pause_samples` zero samples (one audio message)
  between consecutive segments; a later segment's chunks that arrive early are held until
  the earlier ones have all been delivered;
- segment k+1 enters T3 when segment k has delivered its first audio (or ended), at most
  `WINDOW` segments being in the stages at once: the next segment's T3 work overlaps the
  current one's CFM/HiFiGAN work, but never competes with its first chunk;
- exactly one terminal message: `end` with totals (tokens summed, samples = every segment's
  samples + the pauses, checked against the plan), or the first error (any segment's,
  named with its position; the other segments are cancelled), or `end` with reason
  `cancelled` (wire v2). Cancelling the
  public id cancels every segment in the stages.

The same text, parameters and seed give the same samples as the front-end reference
`pipeline.longform.stream_plan` (segments as separate requests, stitched in order): a
segment's audio depends on its text and parameters only.

Threads: `prepare` and `stage` run in a caller's thread (planning a long text takes a while
and must not stall the coordinator); everything else runs in the coordinator's thread,
which owns the state. The coordinator calls a handful of hooks (see pipeline/coordinator.py):
`prepare`/`stage`/`unstage` when a request arrives, `launch`/`begin` to start it, `cancel`,
`on_stage_message` for every message from HiFiGAN, `on_finish` from its `_finish`, and
`segment_ids` when a stage's death fails every request (so they are cancelled again once
the stage is back).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ipc.schema import Audio, Cancel, End, Error, Message, Request
from pipeline.text.plan import DEFAULT_SENTENCE_SILENCE_S, SAMPLE_RATE, LongFormPlan, make_plan, pause_samples
from stages.common.accounting import SAMPLES_PER_TOKEN
from stages.common.layout import CHATTERBOX
from stages.common.params import CONTINUATION, resolve_params

if TYPE_CHECKING:
    from pipeline.coordinator import Coordinator

LONGFORM = "longform"  # request parameter: true = always plan, false = never (T3's own limits apply), absent = when needed
SENTENCE_SILENCE = "sentence_silence"  # request parameter: seconds of silence between segments
WINDOW = 2  # segments of one request in the stages at once: enough for the next one's T3 work to overlap
#             the current one's vocoding; each holds a slot in every stage (stage capacity is per id)
log = logging.getLogger("tts.longform")


def split_params(params: Mapping[str, Any] | None) -> tuple[dict[str, Any], bool | None, float]:
    """(the synthesis parameters, the `longform` mode, the pause in seconds); ValueError names a bad field."""
    params = dict(params or {})
    mode = params.pop(LONGFORM, None)
    if mode is not None and not isinstance(mode, bool):
        raise ValueError(f"longform must be true, false or absent, got {mode!r}")
    silence = params.pop(SENTENCE_SILENCE, None)
    silence = DEFAULT_SENTENCE_SILENCE_S if silence is None else silence
    pause_samples(silence)  # validates (ValueError naming sentence_silence)
    return params, mode, silence


class Planner:
    """Plans requests for one model: its segment budget and its tokenizer (loaded on first use, thread-safe)."""

    def __init__(self, model_spec=None):
        self.model_spec = model_spec
        self._lock = threading.Lock()
        self._budget = None

    def budget(self):
        with self._lock:
            if self._budget is None:
                from pipeline.models import ModelSpec
                from pipeline.text.budget import for_model

                self._budget = for_model(self.model_spec or ModelSpec())
            return self._budget

    def model_kind(self) -> str:
        """"chatterbox" / "turbo" of the spec (the base model for no spec, or one it cannot tell)."""
        try:
            return self.model_spec.kind if self.model_spec is not None else CHATTERBOX
        except Exception:
            return CHATTERBOX

    def prepare(self, text: str, params: Mapping[str, Any] | None, schedule=None) -> tuple[LongFormPlan | None, dict]:
        """(the plan, or None for an ordinary request; the resolved parameters the request is accepted with).

        An ordinary request keeps its text and parameters exactly (no long-form keys); a
        long-form one is accepted with the synthesis parameters, the seed its segment seeds
        derive from, and the long-form keys. ValueError for bad input, before any work.
        """
        synth, mode, silence = split_params(params)
        resolved = resolve_params(synth, schedule, self.model_kind())  # the model family's parameters
        if mode is False:
            return None, resolved
        budget, count = self.budget()
        if mode is None and budget.admits(count(text.strip()), len(text.strip())):
            return None, resolved  # fits one segment: the request runs as it always did
        plan = make_plan(text, resolved, budget, count, pause_samples(silence))
        if mode is None and len(plan.segments) == 1:
            return None, resolved
        accepted = {**resolved, SENTENCE_SILENCE: silence}
        if mode is not None:
            accepted[LONGFORM] = mode
        return plan, accepted


@dataclass(eq=False)
class _Segment:
    index: int
    rid: str  # internal id in the stages
    samples: int = 0  # received so far (the next expected `start`)
    first_ts: float | None = None  # `ts` of its first audio message (HiFiGAN's clock)
    ended: bool = False
    tokens: int = 0
    reason: str = ""
    stats: Mapping[str, float] = field(default_factory=dict)
    held: list = field(default_factory=list)  # audio that arrived before this segment became the head


@dataclass(eq=False)
class _LongForm:
    rid: str  # the public id
    plan: LongFormPlan
    base: str  # internal ids are f"{base}/{k}"
    inflight: deque = field(default_factory=deque)  # submitted segments not yet fully delivered, head first
    next_index: int = 0  # the next segment to submit
    pos: int = 0  # samples delivered under the public id (pauses included)
    lengths: list = field(default_factory=list)  # samples of each finished segment
    tokens: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.plan.segments)


class LongFormRequests:
    """The coordinator's long-form requests (see the module docstring)."""

    def __init__(self, coordinator: "Coordinator", planner: Planner | None = None):
        self.coord = coordinator
        self.planner = planner or Planner()
        self._staged: dict[str, LongFormPlan] = {}  # planned in a caller's thread, launched in the coordinator's
        self._staged_lock = threading.Lock()
        self.active: dict[str, _LongForm] = {}  # public id -> request (coordinator thread only)
        self.segments: dict[str, tuple[_LongForm, _Segment]] = {}  # internal id -> its request and segment

    # --- any thread -----------------------------------------------------------------------
    def prepare(self, text: str, params: Mapping[str, Any] | None, schedule=None) -> tuple[LongFormPlan | None, dict]:
        return self.planner.prepare(text, params, schedule)

    def stage(self, rid: str, plan: LongFormPlan) -> None:
        """Hold a plan made in a caller's thread until the coordinator thread launches it (`launch`)."""
        with self._staged_lock:
            self._staged[rid] = plan

    def unstage(self, rid: str) -> None:
        """The request never reached the coordinator thread: forget its plan."""
        with self._staged_lock:
            self._staged.pop(rid, None)

    # --- the coordinator thread: the hooks ------------------------------------------------
    def launch(self, rid: str) -> bool:
        """A request arrived on the wake socket: start it if it is a staged long-form request."""
        with self._staged_lock:
            plan = self._staged.pop(rid, None)
        if plan is None:
            return False
        rec = self.coord.records.get(rid)
        if rec is not None and not rec.done:  # else it ended before it started (every request failed): drop it
            self.begin(rid, plan)
        return True

    def begin(self, rid: str, plan: LongFormPlan) -> None:
        lf = _LongForm(rid, plan, base=uuid.uuid4().hex)
        self.active[rid] = lf
        log.info("long-form request %s: %d segments (%s/0...), %d-sample pauses", rid[:64], lf.count, lf.base, plan.pause_samples)
        self._pump(lf)

    def segment_ids(self, rid: str) -> list[str]:
        """Internal ids of a long-form request's segments still in the stages (none for another request)."""
        lf = self.active.get(rid)
        return [seg.rid for seg in lf.inflight if not seg.ended] if lf is not None else []

    def cancel(self, rid: str) -> bool:
        """Cancel a long-form request by its public id (False: not one of ours, the coordinator handles it)."""
        lf = self.active.get(rid)
        if lf is None:
            return False
        rec = self.coord.records.get(rid)
        if rec is not None and not rec.done:
            # the one terminal message (wire v2: `end` with reason `cancelled`); on_finish cancels the segments
            self.coord._finish(rec, End(rid=rid, totals={"samples": lf.pos}, reason="cancelled"))
        else:
            self.on_finish(rid)
        return True

    def on_finish(self, rid: str) -> None:
        """The public request ended (any way): cancel its segments still in the stages, free everything.

        A plan still staged stays until its request comes off the wake socket (`launch` drops it then).
        """
        lf = self.active.pop(rid, None)
        if lf is None:
            return
        for seg in lf.inflight:
            self.segments.pop(seg.rid, None)
            if not seg.ended:
                self.coord._to_t3(Cancel(rid=seg.rid))  # never blocks: what T3 cannot take waits in the outbox
        lf.inflight.clear()

    def on_stage_message(self, msg: Message) -> bool:
        """A message from the stages; True if it belonged to a segment (handled here), False for the coordinator."""
        entry = self.segments.get(msg.rid)
        if entry is None:
            return False
        lf, seg = entry
        if isinstance(msg, Audio):
            if msg.start != seg.samples:
                self._fail(lf, "coordinator", f"audio out of order: chunk starts at {msg.start}, expected {seg.samples}", seg)
                return True
            seg.samples += int(msg.pcm.shape[0])
            if seg.first_ts is None:
                seg.first_ts = float(msg.ts)
            if seg is lf.inflight[0]:
                self._publish(lf, msg)
            else:
                seg.held.append(msg)
        elif isinstance(msg, End):
            tokens, samples = msg.totals.get("tokens", -1), msg.totals.get("samples", -1)
            if samples != seg.samples or samples != SAMPLES_PER_TOKEN * tokens:
                self._fail(lf, "coordinator", f"audio lost: received {seg.samples} samples, "
                                              f"HiFiGAN sent {samples} for {tokens} tokens", seg)
                return True
            seg.ended, seg.tokens, seg.reason, seg.stats = True, int(tokens), msg.reason, dict(msg.stats)
            self._advance(lf)
        elif isinstance(msg, Error):
            seg.ended = True  # the stages freed it already (an error travels down the chain): no cancel for it
            self._fail(lf, msg.stage, msg.message, seg)
            return True
        elif isinstance(msg, Cancel):  # the stages cancelled a segment we did not: the request is cancelled
            self.cancel(lf.rid)
            return True
        if lf.rid in self.active:
            self._pump(lf)
        return True

    # --- internals (coordinator thread) -------------------------------------------------
    def _pump(self, lf: _LongForm) -> None:
        """Submit the next segments: while the window has room and the newest one has started streaming (or ended)."""
        while lf.next_index < lf.count and len(lf.inflight) < WINDOW:
            newest = lf.inflight[-1] if lf.inflight else None
            if newest is not None and newest.first_ts is None and not newest.ended:
                return  # let the newest segment have the stages for its first chunk
            k = lf.next_index
            lf.next_index += 1
            seg = _Segment(k, f"{lf.base}/{k}")
            lf.inflight.append(seg)
            self.segments[seg.rid] = (lf, seg)
            params = lf.plan.segment_params(k)
            if k:
                params[CONTINUATION] = True
            self.coord._to_t3(Request(rid=seg.rid, text=lf.plan.segments[k].text, params=params))

    def _publish(self, lf: _LongForm, msg: Audio) -> None:
        rec = self.coord.records.get(lf.rid)
        if rec is None or rec.done:
            return
        n = int(msg.pcm.shape[0])
        self.coord._deliver(rec, dataclasses.replace(msg, rid=lf.rid, start=lf.pos))
        lf.pos += n

    def _advance(self, lf: _LongForm) -> None:
        """Retire ended segments from the head: their pause, then the next segment's held audio; the end after the last."""
        while lf.inflight and lf.inflight[0].ended:
            seg = lf.inflight.popleft()
            self.segments.pop(seg.rid, None)
            lf.lengths.append(seg.samples)
            lf.tokens += seg.tokens
            self._merge_stats(lf, seg)
            if seg.index == lf.count - 1:
                self._complete(lf, seg.reason)
                return
            if lf.plan.pause_samples:
                pause = Audio(rid=lf.rid, start=0, sample_rate=SAMPLE_RATE, pcm=np.zeros(lf.plan.pause_samples, np.float32))
                self._publish(lf, pause)
            if lf.inflight:
                head = lf.inflight[0]
                held, head.held = head.held, []
                for msg in held:
                    self._publish(lf, msg)

    def _merge_stats(self, lf: _LongForm, seg: _Segment) -> None:
        """Per-stage figures summed over segments (`end_ts.*`: the latest); each segment's timestamps kept as `segment.<k>.*`."""
        for key, value in seg.stats.items():
            if key.startswith("end_ts."):
                lf.stats[key] = max(lf.stats.get(key, value), value)
                lf.stats[f"segment.{seg.index}.{key}"] = value
            else:
                lf.stats[key] = lf.stats.get(key, 0.0) + value
        if seg.first_ts is not None:
            lf.stats[f"segment.{seg.index}.first_audio_ts"] = seg.first_ts

    def _complete(self, lf: _LongForm, reason: str) -> None:
        rec = self.coord.records.get(lf.rid)
        if rec is None or rec.done:
            self.on_finish(lf.rid)
            return
        expected = lf.plan.total_samples(lf.lengths)
        if lf.pos != expected or lf.pos != SAMPLES_PER_TOKEN * lf.tokens + lf.plan.pause_total:
            msg: Message = Error(rid=lf.rid, stage="coordinator",
                                 message=f"long-form audio lost: delivered {lf.pos} samples, expected {expected} "
                                         f"({sum(lf.lengths)} in {lf.count} segments + {lf.plan.pause_total} of pauses)")
        else:
            stats = {**lf.stats, "segments": float(lf.count)}
            msg = End(rid=lf.rid, totals={"tokens": lf.tokens, "samples": lf.pos}, reason=reason, stats=stats)
        self.coord._finish(rec, msg)  # on_finish frees the rest

    def _fail(self, lf: _LongForm, stage: str, message: str, seg: _Segment) -> None:
        """The first error ends the request; the coordinator's _finish -> on_finish cancels the segments still running."""
        rec = self.coord.records.get(lf.rid)
        if rec is None or rec.done:
            self.on_finish(lf.rid)
            return
        self.coord._finish(rec, Error(rid=lf.rid, stage=stage, message=f"{message} (segment {seg.index + 1} of {lf.count})"))
