"""The Python API: a context-managed multi-process `Pipeline` with `stream()` and `synthesize()`.

    with Pipeline() as tts:                      # built-in model; Pipeline(checkpoint="dir") for real weights
        for chunk in tts.stream("Hello there."):  # AudioChunk(start, pcm float32 [n], sample_rate)
            play(chunk.pcm)
        wav = tts.synthesize("And goodbye.")      # the whole waveform, float32 [960 * tokens]
        tts.synthesize("Hi.", voice="alice")      # a stored voice (`tts-pipeline voice add alice ref.wav`)
        tts.synthesize("Hi.", voice_file="ref.wav")  # a voice made from a recording here, cached by content
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np

from ipc.schema import Audio, Cancel, End, Error
from ipc.sockets import SocketFactory
from pipeline.coordinator import Coordinator, RequestError
from pipeline.launcher import STOP_TIMEOUT_S, PipelineConfig, StageSupervisor
from pipeline.models import ModelSpec, warn_if_builtin

SAMPLE_RATE = 24_000  # Hz, every Chatterbox model's output rate
log = logging.getLogger("tts.pipeline")
DRAIN_POLL_S = 0.02  # how often close(drain=...) looks whether the requests in flight are done


@dataclass
class AudioChunk:
    start: int  # index of the chunk's first sample within the request
    pcm: np.ndarray  # [n] float32 in [-1, 1]
    sample_rate: int = SAMPLE_RATE


class Pipeline:
    """T3, CFM and HiFiGAN in three processes, linked by ZeroMQ; this process coordinates and publishes."""

    def __init__(self, config: PipelineConfig | None = None, *, checkpoint: str | None = None, **model: Any):
        if config is None:
            config = PipelineConfig(model=ModelSpec(checkpoint=checkpoint, **model))
        self.config = config
        self.sockets: SocketFactory | None = None
        self.supervisor: StageSupervisor | None = None
        self.coordinator: Coordinator | None = None
        self.failed = threading.Event()  # set when the supervisor gave up restarting a stage (unhealthy for good)
        self.failure = ""  # why
        self._force = threading.Event()  # force_close(): a drain in progress ends now
        self._draining = False
        self._voice_files = None  # pipeline.voices.VoiceFiles, made on the first voice_file request
        self._voice_lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> "Pipeline":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        spec = self.config.model.check().resolved()  # the model family is detected once, here
        if spec != self.config.model:
            self.config = replace(self.config, model=spec)
        self.config.check()  # ConfigError (a ValueError) names the setting
        warn_if_builtin(self.config.model)
        self.sockets = SocketFactory()
        try:
            self.supervisor = StageSupervisor(self.config, self.sockets)
            self.coordinator = Coordinator(self.sockets, self.supervisor.endpoint, self.config.schedule, self.config.model,
                                           max_inflight=self.config.max_inflight, max_queue=self.config.max_queue)
            self.supervisor.start()
            self.coordinator.start()
            self.supervisor.watch(self.coordinator.stage_died, self.coordinator.stage_ready, self._gave_up)
        except BaseException:
            self.close()
            raise

    def _gave_up(self, message: str) -> None:
        self.failure = message
        if self.coordinator is not None:
            self.coordinator.give_up(message)
        self.failed.set()

    def close(self, drain: float | None = None) -> None:
        """Stop the coordinator and the stages, close every socket, remove the run directory (idempotent).

        drain: seconds to let the requests in flight finish first (new ones are refused with
        `shutting down`); whatever is left then fails with `shutting down`. Without it they
        fail at once. Either way every consumer gets its terminal message, none is left blocked.
        """
        coordinator, supervisor = self.coordinator, self.supervisor
        if coordinator is not None and supervisor is not None:
            try:
                if drain and not coordinator.dead:
                    self._draining = True
                    with coordinator.lock:
                        coordinator.draining = "the server is stopping and takes no new requests"
                    deadline = time.monotonic() + drain
                    while coordinator.in_flight() and time.monotonic() < deadline and not self._force.is_set():
                        time.sleep(DRAIN_POLL_S)
                    left = coordinator.in_flight()
                    coordinator.fail_all("shutting down: the drain was cut short (stopped at once)" if self._force.is_set() else
                                         f"shutting down: the request did not finish within the {drain:g} s drain timeout")
                    if left:
                        log.warning("drain ended: %d request(s) failed with `shutting down`", left)
                else:
                    coordinator.fail_all("shutting down: the pipeline was closed")
            except Exception:  # closing must go on whatever happened to the coordinator
                log.exception("failing the requests in flight on close")
        coordinator, supervisor, sockets = self.coordinator, self.supervisor, self.sockets
        self.coordinator = self.supervisor = self.sockets = None
        try:
            if coordinator is not None:
                coordinator.stop()
        finally:
            try:
                if supervisor is not None:
                    supervisor.stop(0 if self._force.is_set() else STOP_TIMEOUT_S)
            finally:
                if sockets is not None:
                    sockets.close()  # closes every socket and removes the run directory
                self._draining = False

    def force_close(self) -> None:
        """Cut a close(drain=...) in progress short (from a signal handler or another thread): fail the rest now, kill the stages."""
        self._force.set()

    def status(self) -> dict[str, Any]:
        """Health for operators and the HTTP app: state, reason, every stage's health and restarts, requests in flight.

        state: "ready", "restarting" (a stage is down and being restarted), "unhealthy" (the
        supervisor gave up), "draining" (close(drain=...) in progress) or "stopped".
        """
        coordinator, supervisor = self.coordinator, self.supervisor
        if coordinator is None or supervisor is None:
            return {"state": "stopped", "reason": "the pipeline is not running", "stages": {}, "active": 0, "restarts": 0}
        stages = supervisor.snapshot()
        with coordinator.lock:
            active, down, dead = len(coordinator.records), dict(coordinator.down), coordinator.dead
        restarting = {n: h for n, h in stages.items() if h.state != "up"}
        if dead or supervisor.gave_up:
            state, reason = "unhealthy", dead or supervisor.gave_up
        elif self._draining:
            state, reason = "draining", "shutting down"
        elif down or restarting:
            name = next(iter(down or restarting))
            state = "restarting"
            reason = f"restarting: {down[name]}" if name in down else f"restarting: stage {name} is not running"
        else:
            state, reason = "ready", ""
        return {"state": state, "reason": reason, "stages": {n: h.to_dict() for n, h in stages.items()},
                "active": active, "restarts": sum(h.restarts for h in stages.values())}

    @property
    def endpoints(self) -> dict[str, str]:
        """Where remote clients send requests and subscribers connect."""
        return dict(self.coordinator.endpoints) if self.coordinator else {}

    # --- requests -----------------------------------------------------------------------
    def stream(self, text: str, rid: str | None = None, voice_file: str | None = None, **params: Any) -> Iterator[AudioChunk]:
        """Synthesize `text`, yielding audio chunks as they arrive. Raises ValueError for bad input, RequestError on failure.

        Bad input is rejected before the first chunk. Closing the iterator early cancels the request.
        `voice="name"` speaks with a stored voice; `voice_file="ref.wav"` with the voice of that
        recording (computed here, in this process, once per file content; see `voice_for_file`).
        """
        handle = self.submit(text, rid=rid, voice_file=voice_file, **params)
        return handle.chunks()

    def submit(self, text: str, rid: str | None = None, voice_file: str | None = None, **params: Any) -> "RequestHandle":
        if self.coordinator is None:
            raise RuntimeError("the pipeline is not running (use it as a context manager)")
        notices: list[str] = []
        if voice_file is not None:
            if params.get("voice") is not None:
                raise ValueError("give voice or voice_file, not both")
            params["voice"], notices = self.voice_for_file(voice_file)
        from pipeline.voices import check_voice_name

        # an unknown voice, or one made for the other model family, fails here, named
        check_voice_name(self.config.voices_root(), params.get("voice"), self.config.model_kind)
        rid, sink, resolved = self.coordinator.submit(text, params, rid)
        handle = RequestHandle(self.coordinator, rid, sink, resolved)
        handle.notices = notices
        return handle

    def voice_for_file(self, path: str) -> tuple[str, list[str]]:
        """(the stored name of the voice of recording `path`, notices such as a cut); computed once per content.

        Raises stages.voice.audio.VoiceInputError (a ValueError) naming the file for a bad recording."""
        from pipeline.voices import VoiceFiles

        with self._voice_lock:
            if self._voice_files is None:
                self._voice_files = VoiceFiles(self.config.model, self.config.voices_root())
        name, notices = self._voice_files.voice_for(path)
        for notice in notices:
            log.warning("notice: %s", notice)
        return name, notices

    def synthesize(self, text: str, **params: Any) -> np.ndarray:
        """The whole waveform of `text`: float32 [960 * tokens] at 24 kHz."""
        chunks = [c.pcm for c in self.stream(text, **params)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class RequestHandle:
    """One submitted request: its id, resolved parameters (seed included) and its chunks."""

    def __init__(self, coordinator: Coordinator, rid: str, sink: "queue.Queue", params: dict):
        self.coordinator, self.rid, self.sink, self.params = coordinator, rid, sink, params
        self.end: End | None = None
        self.notices: list[str] = []  # about the request's voice file (e.g. it was cut to 60 s)

    def chunks(self) -> Iterator[AudioChunk]:
        done = False
        try:
            while True:
                msg = self.sink.get()
                if isinstance(msg, Audio):
                    yield AudioChunk(msg.start, np.asarray(msg.pcm, dtype=np.float32), msg.sample_rate)
                elif isinstance(msg, End):
                    self.end, done = msg, True
                    return
                elif isinstance(msg, Error):
                    done = True
                    raise RequestError(f"{msg.stage}: {msg.message}")
                elif isinstance(msg, Cancel):
                    done = True
                    return
        finally:
            if not done:  # the consumer stopped early: free the request everywhere
                self.coordinator.cancel(self.rid)
