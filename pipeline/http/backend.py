"""The HTTP server's one view of the engine: an in-process `Pipeline` or a running `tts-pipeline serve`.

Everything the server reads about the pipeline (what it runs: `served()`, the model family and
default chunk schedule requests are validated with; readiness, stage liveness and restarts,
active and queued requests, per-stage busy time) and every way it starts, streams and
cancels a request goes through this module, so it is the one place to change when the
pipeline grows a status method or an admission limit (see docs/http.md, "Wiring").

Both backends yield the same thing: a `Synthesis`, iterated in a thread of its own
(it blocks), cancellable from any other thread.
"""
from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

log = logging.getLogger("tts.http")

# A `serve` that does not welcome a probe subscription within 1 s, or then answer `info` within 1 s, is not ready.
PROBE_TIMEOUT_MS = 1_000
# Errors the pipeline reports when it refuses a request for load; the HTTP layer answers 503 to them.
# The admission limit words its error "server busy ..." (optionally behind the "<stage>: " prefix).
BUSY_PATTERN = re.compile(r"^(?:[\w.-]+: )*server busy", re.IGNORECASE)
# A stage that died, or a pipeline that is not running: the service is unavailable, not the request bad.
# "restarting": a stage is being restarted by the supervisor; "shutting down": the server is draining.
UNAVAILABLE_PATTERN = re.compile(r"\bdied\b|not running|no welcome|no reply from|restarting|shutting down", re.IGNORECASE)
# Input errors a stage finds that the HTTP layer cannot check before submitting (T3 tokenises the text:
# "text is too long: N tokens ...", "text produced no tokens"): the request is bad, not the server.
INPUT_PATTERN = re.compile(r"^(?:[\w.-]+: )*(?:text\b|unknown voice\b|voice ')")  # also a voice the stage cannot load


@dataclass(frozen=True)
class Served:
    """What the pipeline runs, as far as validating a request goes: the model family and its default schedule."""

    kind: str  # "chatterbox" or "turbo" (stages/common/layout.py): which parameters a request may carry
    schedule: Any  # the ChunkSchedule a request's unset streaming knobs take (cross-field limits use it)


def served_from_info(info) -> Served:
    """A server's `info` answer (ipc.schema.Info) -> Served; None (a server from before `info`) = the base model
    with ChunkSchedule()'s defaults. ValueError naming the field for an answer this side cannot use."""
    from stages.cfm.schedule import ChunkSchedule
    from stages.common.layout import CHATTERBOX, MODEL_KINDS

    if info is None:
        return Served(CHATTERBOX, ChunkSchedule())
    if info.model not in MODEL_KINDS:
        raise ValueError(f"info.model must be one of {', '.join(MODEL_KINDS)}, got {info.model!r}")
    return Served(info.model, ChunkSchedule.from_params(info.schedule))  # knobs this side does not know are ignored


@dataclass
class StageState:
    alive: bool  # up and taking requests (False while it is being restarted, or after the supervisor gave up)
    restarts: int = 0  # times the supervisor restarted it after it died
    state: str = ""  # the supervisor's word: up, restarting, failed, starting, stopped ("" when unknown)


@dataclass
class EngineStatus:
    ready: bool
    reason: str = ""  # why not ready ("starting", "stage t3 (pid 12) died (exit code -9)", ...); "" when ready
    stages: dict[str, StageState] = field(default_factory=dict)  # empty when unknown (remote)
    active: int | None = None  # requests the pipeline holds, queued ones included (None: unknown)
    queued: int | None = None  # of those, waiting for a T3 slot (None: unknown)


def is_busy(message: str) -> bool:
    return bool(BUSY_PATTERN.match(message))


def is_unavailable(message: str) -> bool:
    return bool(UNAVAILABLE_PATTERN.search(message))


def is_input_error(message: str) -> bool:
    return bool(INPUT_PATTERN.match(message))


class Synthesis:
    """One request's audio: iterate (in one thread) for (start sample, float32 pcm [n]); cancel() from any thread."""

    rid: str | None = None  # the pipeline's request id (remote: known from the first chunk)
    end_stats: dict[str, float]  # per-stage figures from the end message ("busy_s.t3", ...), {} when unknown
    completed: bool  # the stream ended with the pipeline's end message (not a cancel)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Free the request if it is still running (the iterating thread calls this last)."""
        raise NotImplementedError


# --- in-process -------------------------------------------------------------------------
class LocalSynthesis(Synthesis):
    def __init__(self, handle):
        self.handle, self.rid = handle, handle.rid
        self.end_stats, self.completed = {}, False
        self._chunks = handle.chunks()

    def __iter__(self):
        for chunk in self._chunks:
            yield chunk.start, chunk.pcm
        end = self.handle.end
        self.completed = end is not None and end.reason != "cancelled"
        self.end_stats = dict(end.stats) if end is not None else {}

    def cancel(self) -> None:
        # Immediate, from any thread: the cancel travels T3 -> CFM -> HiFiGAN and comes back to
        # the handle as the end of its chunks. (RequestHandle has no cancel() of its own today.)
        self.handle.coordinator.cancel(self.handle.rid)

    def close(self) -> None:
        self._chunks.close()  # cancels the request if the chunks were not read to the end


class LocalBackend:
    """Owns one in-process `Pipeline`: started, held and closed by a thread of its own.

    The stage processes watch the launcher *process* (a pidfd, stages/common/process.py), so they
    would outlive a short-lived starting thread; one owner thread still starts the pipeline and
    closes it in `close()`, so start and close happen in one place.
    """

    remote = False

    def __init__(self, config):
        from pipeline.api import Pipeline

        self.config = config
        self.pipeline = Pipeline(config)
        self._served = Served(config.model_kind, config.schedule)
        self.voices_dir = config.voices_root()  # the stored voices the pipeline's stages load
        self._started = threading.Event()  # set when start() finished, well or badly
        self._stop = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def describe(self) -> dict[str, Any]:
        spec = self.config.model
        return {"builtin": spec.builtin, "description": spec.describe(), "family": self._served.kind,
                "max_inflight": self.config.max_inflight}

    def served(self) -> Served:
        return self._served

    def start(self) -> None:
        """Start the pipeline in the owner thread; returns at once (see status() and wait_started())."""
        self._thread = threading.Thread(target=self._own, name="tts-http-pipeline", daemon=True)
        self._thread.start()

    def _own(self) -> None:
        try:
            self.pipeline.start()
        except BaseException as e:  # reported by status() and wait_started(); Pipeline.start cleaned up
            self._start_error = e
            self._started.set()
            return
        self._started.set()
        try:
            self._stop.wait()
        finally:
            self.pipeline.close()

    def wait_started(self, timeout: float | None = None) -> BaseException | None:
        """Block until the start finished; the error it raised, or None."""
        self._started.wait(timeout)
        return self._start_error

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def status(self) -> EngineStatus:
        if self._start_error is not None:
            return EngineStatus(False, f"failed to start: {self._start_error}")
        if not self._started.is_set():
            return EngineStatus(False, "starting")
        st = self.pipeline.status()  # ready / restarting / unhealthy / draining / stopped, per-stage health
        if st["state"] == "stopped":
            return EngineStatus(False, "stopped")
        stages = {name: StageState(alive=h["state"] == "up", restarts=h["restarts"], state=h["state"])
                  for name, h in st["stages"].items()}
        active = st["active"]  # requests not yet ended, failed or cancelled
        # T3 runs max_inflight requests at once and queues the rest; the coordinator cannot see
        # that queue, so this is the count beyond the slots (exact once the pipeline reports it).
        queued = max(0, active - self.config.max_inflight)
        return EngineStatus(st["state"] == "ready", st["reason"], stages, active, queued)

    def open(self, text: str, params: dict[str, Any]) -> LocalSynthesis:
        """Submit; raises ValueError (bad input) or RequestError (refused, pipeline dead) at once."""
        return LocalSynthesis(self.pipeline.submit(text, **params))


# --- remote (`tts-pipeline http --connect`) --------------------------------------------
class RemoteSynthesis(Synthesis):
    """A request on its own `RemoteClient` (closed with it: a client keeps each request's SUB socket until closed)."""

    def __init__(self, client, text: str, params: dict[str, Any]):
        self.client = client
        self.end_stats, self.completed = {}, False
        self._messages = client.stream(text, **params)
        self._cancel = threading.Event()

    def __iter__(self):
        for msg in self._messages:
            self.rid = msg.rid
            if self._cancel.is_set():
                return  # close() then sends the cancel, from this thread (sockets are single-threaded)
            yield msg.start, np.asarray(msg.pcm, dtype=np.float32)
        # RemoteClient ends quietly on an end, its reason stop, length or cancelled (client.last_end)
        end = self.client.last_end
        self.completed = not self._cancel.is_set() and end is not None and end.reason != "cancelled"

    def cancel(self) -> None:
        # Takes effect at the next message from the server: the client's sockets belong to the iterating thread.
        self._cancel.set()

    def close(self) -> None:
        try:
            self._messages.close()  # sends the cancel if the stream did not end
        finally:
            self.client.close()


class RemoteBackend:
    """Requests go to a running `tts-pipeline serve` (its request and publish endpoints)."""

    remote = True

    def __init__(self, requests_endpoint: str, pub_endpoint: str, voices_dir=None):
        from pathlib import Path

        from pipeline.voices import default_voices_dir

        self.requests_endpoint, self.pub_endpoint = requests_endpoint, pub_endpoint
        # the server's voice store, read here to list and check names (the server's stages load the voices)
        self.voices_dir = Path(voices_dir) if voices_dir is not None else default_voices_dir()
        self._state = EngineStatus(False, "starting")
        self._served: Served | None = None  # what the server runs: its `info` answer to the last probe that got one
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        served = self.served()
        return {"builtin": None, "description": f"tts-pipeline serve at {self.requests_endpoint}",
                "family": served.kind if served is not None else None, "max_inflight": None}

    def served(self) -> Served | None:
        """The server's model family and default schedule, learned by probe(); None until a probe reached it."""
        with self._lock:
            return self._served

    def start(self) -> None:
        threading.Thread(target=self.probe, name="tts-http-probe", daemon=True).start()

    def wait_started(self, timeout: float | None = None) -> BaseException | None:
        return None  # an absent server is reported by status(), and the server can come later

    def close(self) -> None:
        pass

    def probe(self) -> EngineStatus:
        """Wait for the server's welcome on a probe topic, then ask it what it runs (each up to PROBE_TIMEOUT_MS)."""
        from pipeline.client import RemoteError

        served = None
        if not self._welcomed():
            state = EngineStatus(False, f"no welcome from {self.pub_endpoint}")
        else:
            try:
                served, state = served_from_info(self._ask_info()), EngineStatus(True)
            except RemoteError as e:  # the publisher is there, its request socket did not answer
                state = EngineStatus(False, str(e))
            except ValueError as e:
                state = EngineStatus(False, f"the server at {self.requests_endpoint} sent an unusable info: {e}")
        with self._lock:
            self._state = state
            if served is not None:
                self._served = served
            return state

    def _welcomed(self) -> bool:
        """Subscribe to a probe topic: True when the server's welcome for it came within PROBE_TIMEOUT_MS."""
        from ipc import framing
        from ipc.schema import TOPIC_END, Welcome
        from ipc.sockets import SocketFactory

        topic = f"probe-{uuid.uuid4().hex}"
        with SocketFactory(linger_ms=0) as sockets:
            sub = sockets.socket("SUB", self.pub_endpoint, SUBSCRIBE=topic.encode() + TOPIC_END)
            deadline = time.monotonic() + PROBE_TIMEOUT_MS / 1000
            while (left := deadline - time.monotonic()) > 0 and sub.poll(int(left * 1000) + 1):
                _, msg = framing.recv_published(sub)
                if isinstance(msg, Welcome) and msg.rid == topic:
                    return True
        return False

    def _ask_info(self):
        """The server's answer to `info` (None from a server that predates it); RemoteError when it does not answer."""
        from pipeline.client import RemoteClient

        with RemoteClient(self.requests_endpoint, self.pub_endpoint) as client:
            return client.info(PROBE_TIMEOUT_MS)

    def status(self) -> EngineStatus:
        with self._lock:  # the last probe's answer (probe() is the blocking call)
            return self._state

    def open(self, text: str, params: dict[str, Any]) -> RemoteSynthesis:
        from pipeline.client import RemoteClient

        return RemoteSynthesis(RemoteClient(self.requests_endpoint, self.pub_endpoint), text, params)


def error_kind(exc: BaseException) -> str:
    """What a failed submit or stream means for the client: input, busy, unavailable, failed or internal."""
    from pipeline.client import RemoteError
    from pipeline.coordinator import RequestError

    message = str(exc)
    if isinstance(exc, ValueError):
        return "input"  # the pipeline's own validation (the HTTP layer validated first, so rare)
    if isinstance(exc, (RequestError, RemoteError)):
        if is_busy(message):
            return "busy"
        if is_unavailable(message):
            return "unavailable"
        if is_input_error(message):
            return "input"
        return "failed"
    if isinstance(exc, RuntimeError) and "not running" in message:
        return "unavailable"  # Pipeline.submit before start / after close
    return "internal"
