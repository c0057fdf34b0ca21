"""The stage supervisor: starts T3, CFM and HiFiGAN as spawned processes, waits until each is ready, watches them, stops them.

Start-up is a handshake, never a sleep: each stage binds its input, loads and warms up,
then sends `ready` (or `error` with the reason it cannot start) on the control socket.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from typing import Callable

from ipc import framing
from ipc.endpoints import Endpoints
from ipc.schema import Error, ProtocolError, Ready
from ipc.sockets import SocketFactory
from pipeline.models import ModelSpec
from stages.cfm.schedule import ChunkSchedule, default_schedule
from stages.common.process import StageArgs

STAGES = ("t3", "cfm", "hifigan")  # in chain order
READY_TIMEOUT_S = 900.0  # loading the full-size model on a slow CPU takes minutes
STOP_TIMEOUT_S = 5.0  # SIGTERM, then SIGKILL after this long
log = logging.getLogger("tts.launcher")


class PipelineStartError(RuntimeError):
    """A stage could not start (bad checkpoint, out of memory, ...); the message names the stage."""


def default_threads_per_stage() -> int:
    """Divide the cores between the three stage processes so they do not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // len(STAGES))


@dataclass(frozen=True)
class PipelineConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    schedule: ChunkSchedule | None = None  # None = the model family's defaults (stages/cfm/schedule.py)
    devices: dict[str, str] = field(default_factory=dict)  # per-stage device overrides of model.device
    threads: int = 0  # torch threads per stage process; 0 = cores / 3
    stage_thread_counts: dict[str, int] = field(default_factory=dict)  # per-stage overrides of `threads`
    transport: str = "ipc"
    host: str = "127.0.0.1"
    base_port: int = 0  # tcp: first port; 0 = free ports picked at start
    max_inflight: int = 4  # concurrent requests in T3 (KV-cache slots); more wait in a queue

    def __post_init__(self) -> None:
        if self.schedule is None:
            object.__setattr__(self, "schedule", default_schedule(self.model_kind))

    @property
    def model_kind(self) -> str:
        """"chatterbox" or "turbo"; a checkpoint that cannot be detected counts as chatterbox here (the start
        fails on it anyway, with the reason, in ModelSpec.check)."""
        try:
            return self.model.kind
        except Exception:
            return "chatterbox"

    def device(self, stage: str) -> str:
        return self.devices.get(stage, self.model.device)

    def stage_threads(self, stage: str | None = None) -> int:
        if stage in self.stage_thread_counts:
            return self.stage_thread_counts[stage]
        return self.threads or default_threads_per_stage()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class StageSupervisor:
    """Owns the stage processes and the endpoints they bind."""

    def __init__(self, config: PipelineConfig, sockets: SocketFactory):
        self.config, self.sockets = config, sockets
        base = config.base_port
        if config.transport == "tcp" and base == 0:
            ports = {name: _free_port(config.host) for name in (*STAGES, "control", "audio", "pub", "requests")}
            self.endpoint = lambda name: f"tcp://{config.host}:{ports[name]}"
        else:
            eps = Endpoints(config.transport, config.host, base)
            sockets.endpoints = eps  # removed with the factory
            self.endpoint = eps
        self.processes: dict[str, object] = {}
        self._stopping = threading.Event()

    def start(self) -> None:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        control = self.sockets.socket("PULL", self.endpoint("control"))
        outputs = {"t3": "cfm", "cfm": "hifigan", "hifigan": "audio"}
        model = {k: (str(v) if k == "checkpoint" and v is not None else v)
                 for k, v in asdict(self.config.model).items() if k != "device"}
        from stages.cfm import worker as cfm_worker
        from stages.hifigan import worker as hifigan_worker
        from stages.t3 import worker as t3_worker

        entries = {"t3": t3_worker.run, "cfm": cfm_worker.run, "hifigan": hifigan_worker.run}
        for stage in STAGES:
            args = StageArgs(stage=stage, input_endpoint=self.endpoint(stage), output_endpoint=self.endpoint(outputs[stage]),
                             control_endpoint=self.endpoint("control"), model=model, device=self.config.device(stage),
                             threads=self.config.stage_threads(stage), options={"max_inflight": self.config.max_inflight})
            p = ctx.Process(target=entries[stage], args=(args,), name=f"tts-{stage}", daemon=True)
            p.start()
            self.processes[stage] = p
        self._wait_ready(control)

    def _wait_ready(self, control) -> None:
        pending = set(STAGES)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while pending:
            if time.monotonic() > deadline:
                raise PipelineStartError(f"stage(s) {', '.join(sorted(pending))} not ready after {READY_TIMEOUT_S:.0f} s")
            if control.poll(100):
                try:
                    msg = framing.recv(control)
                except ProtocolError as e:
                    raise PipelineStartError(f"malformed control message: {e}") from None
                if isinstance(msg, Error):
                    raise PipelineStartError(f"stage {msg.stage} failed to start: {msg.message}")
                if isinstance(msg, Ready):
                    pending.discard(msg.stage)
                    log.info("stage %s ready (pid %d)", msg.stage, msg.pid)
            for stage in list(pending):
                code = self.processes[stage].exitcode
                if code is not None and not control.poll(0):
                    raise PipelineStartError(f"stage {stage} exited during start-up (exit code {code})")

    def watch(self, on_death: Callable[[str, int, int | None], None]) -> threading.Thread:
        """Call on_death(stage, pid, exitcode) from a thread as soon as any stage process ends unexpectedly."""

        def run() -> None:
            by_sentinel = {p.sentinel: (stage, p) for stage, p in self.processes.items()}
            done = wait(list(by_sentinel))
            if self._stopping.is_set():
                return
            stage, p = by_sentinel[done[0]]
            p.join(0.1)
            on_death(stage, p.pid, p.exitcode)

        t = threading.Thread(target=run, name="tts-stage-watch", daemon=True)
        t.start()
        return t

    def pids(self) -> dict[str, int]:
        return {stage: p.pid for stage, p in self.processes.items()}

    def stop(self) -> None:
        self._stopping.set()
        for p in self.processes.values():
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in self.processes.values():
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
