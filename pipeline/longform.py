"""Long texts and many utterances in front of the pipeline: requests run consecutively, pipelined, stitched in order.

On a running `Pipeline` (in-process, `serve`, HTTP) a long text is ONE request: the
coordinator plans and runs its segments (`pipeline/longform_coord.py`); `stream_long` is
that request. This module is the front-end version of the same thing, from the same
`LongFormPlan`, sample for sample: `say` uses it to pipeline its lines (each line one
request) and, with `--sequential`, the segments of a line in one process; `stream_plan`
is the byte reference the coordinator's stream is tested against:

- every segment of a plan (`pipeline/text/plan.py`) is one request with the segment's own
  seed; between two segments go exactly `plan.pause_samples` zero samples;
- up to `window` requests are in flight. The next one is submitted as soon as the newest
  one has delivered its first audio (or ended): segment k+1 is in T3 while segment k is
  still in CFM/HiFiGAN, but it never competes with segment k's first chunk, which sets
  the time to first audio;
- the audio is handed out strictly in input order, each request's chunks as they arrive.

`Runner` does the scheduling for any backend that can run one request (`Backend.run`):
the multi-process `Pipeline`, the single-process `Engine` (one at a time), a remote server.
Each request in flight is consumed by a thread of its own that only forwards chunks onto
the runner's one event queue; the consumer's thread does all the bookkeeping, waiting on
that queue (never polling). `stream_long` is the Python API on a running `Pipeline`.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from pipeline.text.plan import DEFAULT_SENTENCE_SILENCE_S, LongFormPlan, make_plan, pause_samples

Emit = Callable[[np.ndarray], None]


class AccountingError(RuntimeError):
    """The stitched stream does not hold exactly its segments' samples plus the pauses."""


class Backend(Protocol):
    max_window: int | None  # most requests it can run at once (None: no limit of its own)

    def run(self, text: str, params: dict, emit: Emit) -> dict:
        """Synthesize one request, calling `emit(pcm float32 [n])` per chunk; returns the stages' end stats."""


@dataclass(frozen=True)
class Unit:
    """One request of the output stream: segment `index` of `count` of utterance `utterance`."""

    utterance: int
    index: int
    count: int
    text: str
    params: dict
    pause_before: int = 0  # zero samples written before this unit's audio
    segments: int = 1  # plan segments it covers (a whole long-form utterance run as one coordinator request: all)

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


def utterance_unit(plan: LongFormPlan, text: str, utterance: int = 0, pause_first: int = 0) -> Unit:
    """The whole plan as one long-form request: the coordinator runs its segments (same seed, same pause, same audio)."""
    from pipeline.longform_coord import LONGFORM, SENTENCE_SILENCE

    params = {**plan.params, "seed": plan.seed, LONGFORM: True, SENTENCE_SILENCE: plan.pause_samples / plan.sample_rate}
    return Unit(utterance, 0, 1, text, params, pause_first, segments=len(plan.segments))


def plan_units(plan: LongFormPlan, utterance: int = 0, pause_first: int = 0) -> list[Unit]:
    """The requests of a plan, in order; `pause_first` is the silence before its first segment."""
    n = len(plan.segments)
    return [Unit(utterance, k, n, s.text, plan.segment_params(k), pause_first if k == 0 else plan.pause_samples)
            for k, s in enumerate(plan.segments)]


# --- what the runner hands out, in order ------------------------------------------------
@dataclass(frozen=True)
class Audio:
    unit: Unit
    pcm: np.ndarray  # float32 [n]


@dataclass(frozen=True)
class Silence:
    unit: Unit  # the unit it precedes
    samples: int


@dataclass(frozen=True)
class Finished:
    unit: Unit
    samples: int  # the unit's own samples (no pause)
    submit_t: float  # perf_counter: submitted, first chunk received, end received
    first_t: float | None
    end_t: float
    stats: dict


class _Cancelled(Exception):
    pass


@dataclass(eq=False)
class _Job:
    unit: Unit
    submit_t: float
    chunks: deque = field(default_factory=deque)
    samples: int = 0
    first_t: float | None = None
    end_t: float | None = None
    stats: dict | None = None
    error: BaseException | None = None
    pause_done: bool = False
    cancelled: bool = False


class Runner:
    """Runs units through a backend, up to `window` at a time, and yields their audio in order."""

    def __init__(self, backend: Backend, window: int = 4):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self.backend = backend
        self.window = min(window, backend.max_window or window)
        self._events: queue.Queue = queue.Queue()
        self._pending: deque[Unit] = deque()
        self._inflight: deque[_Job] = deque()
        self._input_open, self._input_error = True, None
        self.submitted = 0

    # --- any thread ---------------------------------------------------------------------
    def add(self, unit: Unit) -> None:
        self._events.put(("unit", unit))

    def close_input(self, error: BaseException | None = None) -> None:
        """No more units; an `error` is raised after the audio of every unit added before it."""
        self._events.put(("eof", error))

    # --- the consumer's thread ------------------------------------------------------------
    def results(self) -> Iterator[Audio | Silence | Finished]:
        try:
            while True:
                self._submit()
                yield from self._flush()
                if not self._inflight and not self._pending and not self._input_open:
                    if self._input_error is not None:
                        raise self._input_error
                    return
                self._apply(self._events.get())
        finally:
            for job in self._inflight:  # stopped early or failed: the feeders cancel their requests
                job.cancelled = True

    def _apply(self, event: tuple) -> None:
        kind, *rest = event
        if kind == "unit":
            self._pending.append(rest[0])
        elif kind == "eof":
            self._input_open, self._input_error = False, rest[0]
        elif kind == "chunk":
            job, pcm, t = rest
            if job.first_t is None:
                job.first_t = t
            job.chunks.append(pcm)
        elif kind == "end":
            job, stats, t = rest
            job.stats, job.end_t = stats, t
        elif kind == "error":
            job, exc = rest
            raise exc

    def _submit(self) -> None:
        while self._pending and len(self._inflight) < self.window:
            newest = self._inflight[-1] if self._inflight else None
            if newest is not None and newest.first_t is None and newest.end_t is None:
                return  # the newest request has not started streaming: let it have the stages first
            job = _Job(self._pending.popleft(), time.perf_counter())
            self._inflight.append(job)
            self.submitted += 1
            threading.Thread(target=self._feed, args=(job,), name=f"tts-unit-{self.submitted}", daemon=True).start()

    def _flush(self) -> Iterator[Audio | Silence | Finished]:
        while self._inflight:
            head = self._inflight[0]
            if not head.pause_done:
                head.pause_done = True
                if head.unit.pause_before:
                    yield Silence(head.unit, head.unit.pause_before)
            while head.chunks:
                pcm = head.chunks.popleft()
                head.samples += len(pcm)
                yield Audio(head.unit, pcm)
            if head.end_t is None:
                return
            self._inflight.popleft()
            yield Finished(head.unit, head.samples, head.submit_t, head.first_t, head.end_t, head.stats or {})
            self._submit()

    # --- a feeder thread per request ---------------------------------------------------------
    def _feed(self, job: _Job) -> None:
        def emit(pcm: np.ndarray) -> None:
            if job.cancelled:
                raise _Cancelled
            self._events.put(("chunk", job, np.asarray(pcm, np.float32), time.perf_counter()))

        try:
            stats = self.backend.run(job.unit.text, job.unit.params, emit)
            self._events.put(("end", job, dict(stats or {}), time.perf_counter()))
        except _Cancelled:
            pass
        except BaseException as e:  # handed to the consumer, which raises it
            self._events.put(("error", job, e))


# --- backends ---------------------------------------------------------------------------
class PipelineBackend:
    """The multi-process `Pipeline` (thread-safe: requests run concurrently)."""

    max_window = None

    def __init__(self, tts):
        self.tts = tts

    def run(self, text: str, params: dict, emit: Emit) -> dict:
        handle = self.tts.submit(text, **params)
        with contextlib.closing(handle.chunks()) as chunks:  # closing early cancels the request
            for chunk in chunks:
                emit(chunk.pcm)
        return dict(handle.end.stats) if handle.end is not None else {}


class EngineBackend:
    """The single-process `Engine`: one request at a time, in this process."""

    max_window = 1

    def __init__(self, engine):
        self.engine = engine

    def run(self, text: str, params: dict, emit: Emit) -> dict:
        with contextlib.closing(self.engine.stream(text, params)) as chunks:
            for chunk in chunks:
                emit(chunk.pcm.numpy())
        return {}


class RemoteBackend:
    """A running `tts-pipeline serve`; each request in flight has its own client (zmq sockets are per thread)."""

    max_window = None

    def __init__(self, requests_endpoint: str, pub_endpoint: str):
        self.requests_endpoint, self.pub_endpoint = requests_endpoint, pub_endpoint

    def run(self, text: str, params: dict, emit: Emit) -> dict:
        from pipeline.client import RemoteClient

        with RemoteClient(self.requests_endpoint, self.pub_endpoint) as client:
            with contextlib.closing(client.stream(text, **params)) as msgs:
                for msg in msgs:
                    emit(msg.pcm)
        return {}


# --- the Python API ---------------------------------------------------------------------
def stream_plan(backend: Backend, plan: LongFormPlan, window: int = 4) -> Iterator[Any]:
    """The stitched stream of one plan as `pipeline.api.AudioChunk`s (pauses included), total checked at the end."""
    from pipeline.api import AudioChunk

    runner = Runner(backend, window)
    for unit in plan_units(plan):
        runner.add(unit)
    runner.close_input()
    pos, lengths = 0, []
    for item in runner.results():
        if isinstance(item, Finished):
            lengths.append(item.samples)
            continue
        pcm = item.pcm if isinstance(item, Audio) else np.zeros(item.samples, np.float32)
        yield AudioChunk(pos, pcm, plan.sample_rate)
        pos += len(pcm)
    if pos != plan.total_samples(lengths):
        raise AccountingError(f"stitched {pos} samples, expected {plan.total_samples(lengths)} "
                              f"({sum(lengths)} in {len(lengths)} segments + {plan.pause_total} of pauses)")


def plan_text(model_spec, text: str, params: dict | None = None,
              sentence_silence: float = DEFAULT_SENTENCE_SILENCE_S) -> LongFormPlan:
    """Plan `text` for a model (`pipeline.models.ModelSpec`): its budget, its tokenizer, the pause."""
    from pipeline.text.budget import for_model

    budget, count = for_model(model_spec)
    return make_plan(text, params, budget, count, pause_samples(sentence_silence))


def stream_long(tts, text: str, *, sentence_silence: float = DEFAULT_SENTENCE_SILENCE_S,
                rid: str | None = None, **params: Any) -> Iterator[Any]:
    """Synthesize a text of any length on a running `Pipeline` as one request (one id) and one stream of `AudioChunk`s.

    The coordinator segments the text under the model's budget; `params` apply to every
    segment (the seed is the request seed the segment seeds derive from); `sentence_silence`
    seconds of silence go between segments; chunk starts count the whole stream. The same
    as `tts.stream(text, longform=True, sentence_silence=...)`. Raises ValueError for bad
    input before any audio, RequestError if a segment fails; closing early cancels it all.
    """
    from pipeline.longform_coord import LONGFORM, SENTENCE_SILENCE

    return tts.stream(text, rid=rid, **params, **{LONGFORM: True, SENTENCE_SILENCE: sentence_silence})


def synthesize_long(tts, text: str, **kw: Any) -> np.ndarray:
    """The whole stitched waveform of `stream_long`: float32 [segments' samples + pauses]."""
    chunks = [c.pcm for c in stream_long(tts, text, **kw)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
