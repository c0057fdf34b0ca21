"""One request between the engine and the event loop: a thread iterates its Synthesis, the loop awaits its events.

The synthesis blocks (it waits on the pipeline), so each request gets a thread of its own
(never a small shared pool: 32 waiting requests would starve it). The thread encodes each
chunk and hands it to the loop; the loop side records the request's metrics and cancels
it when the client goes away. Events, in order:
    Chunk(data, samples, rid)* then exactly one of Done(data, stats) / Failed(exc) / Cancelled()
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.http.encoders import SAMPLE_RATE, Encoder

log = logging.getLogger("tts.http")


@dataclass
class Chunk:
    data: bytes
    samples: int
    start: int
    rid: str | None


@dataclass
class Done:
    data: bytes  # the encoder's tail (the whole file for formats sent whole)
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class Failed:
    error: BaseException


@dataclass
class Cancelled:
    pass


class RequestRun:
    """Runs backend.open(text, params) in its own thread; `events` is its asyncio queue of events."""

    def __init__(self, backend, text: str, params: dict[str, Any], encoder: Encoder, metrics, endpoint: str,
                 release: Callable[[], None] = lambda: None):
        self.backend, self.text, self.params, self.encoder = backend, text, params, encoder
        self.metrics, self.endpoint, self._release = metrics, endpoint, release
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()  # unbounded: a request's audio is bounded (~48 kB/s of s16le)
        self.rid: str | None = None
        self.samples = 0
        self.outcome: str | None = None  # set once (see finish)
        self._ended = False  # the thread sent its last event
        self._cancel = threading.Event()
        self._synthesis = None
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._last: float | None = None
        self._thread = threading.Thread(target=self._run, name="tts-http-request", daemon=True)

    # --- the request's thread --------------------------------------------------------
    def start(self) -> "RequestRun":
        self.metrics.streams.inc()
        self._thread.start()
        return self

    def _emit(self, event) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
            return True
        except RuntimeError:  # the loop is closed: the server is shutting down
            return False

    def _run(self) -> None:
        synthesis = None
        try:
            synthesis = self.backend.open(self.text, self.params)
            with self._lock:
                self._synthesis = synthesis
            if self._cancel.is_set():
                synthesis.cancel()
            for start, pcm in synthesis:  # after a cancel, until the engine confirms it (its stream ends)
                if self._cancel.is_set():
                    continue
                if not self._emit(Chunk(self.encoder.encode(pcm), len(pcm), start, synthesis.rid)):
                    self.cancel()
            if synthesis.completed and not self._cancel.is_set():
                self.metrics.engine_ends.labels("completed").inc()
                self._emit(Done(self.encoder.finish(), synthesis.end_stats))
            else:
                self.metrics.engine_ends.labels("cancelled").inc()  # here, not in next(): nobody may be reading
                self._emit(Cancelled())
        except BaseException as e:  # the request failed or was refused; the loop side classifies it
            self.metrics.engine_ends.labels("failed").inc()
            self._emit(Failed(e))
        finally:
            self.encoder.close()
            if synthesis is not None:
                try:
                    synthesis.close()
                except Exception:
                    log.exception("closing request %s", synthesis.rid)

    # --- the event loop ---------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the request in every stage (the client went away, or asked)."""
        self._cancel.set()
        with self._lock:
            synthesis = self._synthesis
        if synthesis is not None:
            synthesis.cancel()

    async def next(self):
        event = await self.events.get()
        now = time.perf_counter()
        self._ended = not isinstance(event, Chunk)
        if isinstance(event, Chunk):
            self.rid = event.rid or self.rid
            if self._last is None:
                self.metrics.ttfb.labels(self.endpoint).observe(now - self._t0)
            else:
                self.metrics.chunk_interval.labels(self.endpoint).observe(now - self._last)
            self._last = now
            self.samples += event.samples
        elif isinstance(event, Done):
            audio_s = self.samples / SAMPLE_RATE
            if audio_s > 0:
                self.metrics.rtf.labels(self.endpoint).observe((now - self._t0) / audio_s)
            self.metrics.audio_seconds.labels(self.endpoint).inc(audio_s)
            self.metrics.observe_stage_stats(event.stats)
        return event

    def finish(self, outcome: str) -> None:
        """Record the outcome once (the first call wins); a request still running is cancelled in every stage.

        Outcomes: ok, cancelled (the client went away or asked), rejected (400), busy and
        unavailable (503), error (the synthesis failed).
        """
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.metrics.requests.labels(self.endpoint, outcome).inc()
        self.metrics.streams.dec()
        self._release()
        if not self._ended:
            self.cancel()
