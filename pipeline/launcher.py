"""The stage supervisor: starts T3, CFM and HiFiGAN as spawned processes, waits until each is ready, watches them, stops them.

Start-up is a handshake, never a sleep: each stage binds its input, loads and warms up,
then sends `ready` (or `error` with the reason it cannot start) on the control socket.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from typing import Callable

from ipc import framing
from ipc.endpoints import Endpoints
from ipc.schema import Error, ProtocolError, Ready
from ipc.sockets import SocketFactory
from pipeline.models import ModelSpec
from stages.cfm.schedule import ChunkSchedule, default_schedule
from stages.common.chain import DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_QUEUE
from stages.common.process import StageArgs

STAGES = ("t3", "cfm", "hifigan")  # in chain order
READY_TIMEOUT_S = 900.0  # loading the full-size model on a slow CPU takes minutes
STOP_TIMEOUT_S = 5.0  # SIGTERM, then SIGKILL after this long
RESTART_BACKOFF_S = 0.25  # delay before the first restart in a window; doubles with each further one
RESTART_BACKOFF_MAX_S = 8.0  # a stage that keeps dying waits at most this long between tries
log = logging.getLogger("tts.launcher")


DEVICE_PATTERN = re.compile(r"^(cpu|cuda)(?::(\d+))?$")  # the devices a stage can run on (torch's spelling)
MAX_PORT = 65535  # tcp ports are 16-bit
# Names the supervisor binds on tcp with a base port: the three stage inputs + control, audio, pub, requests.
TCP_PORTS_USED = 7


class PipelineStartError(RuntimeError):
    """A stage could not start (bad checkpoint, out of memory, ...); the message names the stage."""


class ConfigError(ValueError):
    """A bad setting, found before any process starts; `option` is the setting's name ("threads", "t3_device", ...)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.reason = option, message


def check_device(value: str, option: str = "device") -> str:
    """`cpu`, `cuda` (the current CUDA device) or `cuda:N`; CUDA ones only where CUDA is there (ConfigError names it)."""
    m = DEVICE_PATTERN.match(value or "")
    if m is None or (m.group(1) == "cpu" and m.group(2) is not None):
        raise ConfigError(option, f"{value!r} is not a device: use cpu, cuda (the current CUDA device) or cuda:N")
    if m.group(1) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(option, f"{value}: CUDA is not available on this machine "
                                      f"(torch {torch.__version__}, {'CUDA ' + torch.version.cuda if torch.version.cuda else 'a CPU-only build'}); use cpu")
        n = torch.cuda.device_count()
        if m.group(2) is not None and int(m.group(2)) >= n:
            raise ConfigError(option, f"{value}: this machine has {n} CUDA device(s) (cuda:0 to cuda:{n - 1})")
    return value


def max_new_tokens_limit(model: ModelSpec) -> int:
    """The most speech tokens any request can ask of T3 (the shortest text's room in a KV-cache slot, at most the position table)."""
    from stages.t3.batch import DEFAULT_MAX_LEN
    from stages.t3.config import T3Config

    if model.turbo:  # Turbo: the reference's 1001 samples and the room a 375-token voice prompt leaves
        from stages.t3.turbo_config import TurboT3Config
        from stages.t3.turbo_sampling import TURBO_MAX_SAMPLES
        from stages.t3.turbo_tick import TURBO_MAX_LEN

        tcfg = TurboT3Config.from_checkpoint_dir(model.checkpoint) if model.checkpoint else TurboT3Config.from_name(model.preset)
        return min(TURBO_MAX_SAMPLES, min(TURBO_MAX_LEN, tcfg.n_positions) - tcfg.prefill_len(1) + 1)
    cfg = T3Config.from_checkpoint_dir(model.checkpoint) if model.checkpoint else T3Config.from_name(model.preset)
    # the last draw is never fed back (stages/t3/batch.py), hence the + 1
    return min(cfg.max_speech_tokens, DEFAULT_MAX_LEN - cfg.prefill_len(1) + 1)


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
    max_inflight: int = DEFAULT_MAX_INFLIGHT  # concurrent requests in T3 (KV-cache slots); more wait in a queue
    max_queue: int = DEFAULT_MAX_QUEUE  # requests admitted beyond those (waiting for a slot); past both: "server busy"
    voices_dir: str | None = None  # the voice store requests name voices from; None = the user's data dir
    stage_options: dict = field(default_factory=dict)  # extra StageArgs.options for every stage (cuda_graphs: docs/gpu.md)
    restart_budget: int = 5  # restarts of the stages allowed within restart_window_s, then the pipeline gives up
    restart_window_s: float = 60.0

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

    def voices_root(self):
        """The voices folder as a Path (pipeline.voices.default_voices_dir() when unset)."""
        from pathlib import Path

        from pipeline.voices import default_voices_dir

        return Path(self.voices_dir) if self.voices_dir is not None else default_voices_dir()

    def device(self, stage: str) -> str:
        return self.devices.get(stage, self.model.device)

    def check(self) -> "PipelineConfig":
        """Every setting checked before any process starts; ConfigError names the first bad one."""
        check_device(self.model.device, "device")
        for stage, dev in self.devices.items():
            if stage not in STAGES:
                raise ConfigError("devices", f"unknown stage {stage!r} (expected one of {', '.join(STAGES)})")
            check_device(dev, f"{stage}_device")
        for name, value, low in (("threads", self.threads, 0), ("max_inflight", self.max_inflight, 1),
                                 ("max_queue", self.max_queue, 0), ("restart_budget", self.restart_budget, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(name, f"must be an integer >= {low}, got {value!r}")
        for stage, n in self.stage_thread_counts.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(f"{stage}_threads", f"must be an integer >= 1, got {n!r}")
        if self.transport not in ("ipc", "tcp"):
            raise ConfigError("transport", f"must be ipc or tcp, got {self.transport!r}")
        if not isinstance(self.base_port, int) or not 0 <= self.base_port <= MAX_PORT - TCP_PORTS_USED + 1:
            raise ConfigError("port", f"must be 0 (free ports) or 1-{MAX_PORT - TCP_PORTS_USED + 1} "
                                      f"(the server uses {TCP_PORTS_USED} consecutive ports), got {self.base_port!r}")
        if self.transport == "tcp" and self.base_port:
            for port in range(self.base_port, self.base_port + TCP_PORTS_USED):
                with socket.socket() as s:
                    try:
                        s.bind((self.host, port))
                    except OSError as e:
                        raise ConfigError("port", f"tcp port {port} on {self.host} is not free ({e.strerror}): "
                                                  f"is another server running there?") from None
        return self

    def stage_threads(self, stage: str | None = None) -> int:
        if stage in self.stage_thread_counts:
            return self.stage_thread_counts[stage]
        return self.threads or default_threads_per_stage()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class StageHealth:
    """One stage as the supervisor sees it (read by Pipeline.status(), `info`, the HTTP /readyz and /metrics)."""

    state: str = "starting"  # starting | up | restarting | failed | stopped
    pid: int | None = None
    restarts: int = 0  # times this stage was restarted after it died
    last_death: str = ""  # "stage cfm (pid 12) died (exit code -9)", "" if it never died

    def to_dict(self) -> dict:
        return asdict(self)


def stage_queue(config: PipelineConfig) -> int:
    """The waiting bound given to the stages, derived from the one admission limit.

    A long-form request is one admitted request but has up to `longform_coord.WINDOW` segment
    requests in the stages at once, so each stage holds room for WINDOW x the admitted
    requests (max_inflight of them decoding in T3, the rest waiting): an admitted request is
    never refused by a stage.
    """
    from pipeline.longform_coord import WINDOW

    return WINDOW * (config.max_inflight + config.max_queue) - config.max_inflight


class StageSupervisor:
    """Owns the stage processes and the endpoints they bind; restarts a stage that dies (see `watch`).

    Restart policy: a dead stage is started again on the same endpoints after a backoff of
    RESTART_BACKOFF_S doubling with each restart still inside the window (at most
    RESTART_BACKOFF_MAX_S), and reports `ready` after its warm-up like at start-up. At most
    `config.restart_budget` restarts (all stages together) within `config.restart_window_s`;
    one more death inside the window and the supervisor gives up: the pipeline is unhealthy
    for good (`serve` exits non-zero).
    """

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
        self.health: dict[str, StageHealth] = {stage: StageHealth() for stage in STAGES}
        self.gave_up: str = ""  # why the supervisor stopped restarting ("" while it has not)
        self.lock = threading.Lock()  # guards health, processes and gave_up against readers in other threads
        self._restart_times: deque[float] = deque()  # monotonic times of the restarts inside the window
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # written by stop(): wakes the watcher out of its wait
        self._control = None
        self._watcher: threading.Thread | None = None

    def _spawn(self, stage: str) -> None:
        import torch.multiprocessing as mp

        from stages.cfm import worker as cfm_worker
        from stages.hifigan import worker as hifigan_worker
        from stages.t3 import worker as t3_worker

        entries = {"t3": t3_worker.run, "cfm": cfm_worker.run, "hifigan": hifigan_worker.run}
        outputs = {"t3": "cfm", "cfm": "hifigan", "hifigan": "audio"}
        model = {k: (str(v) if k == "checkpoint" and v is not None else v)
                 for k, v in asdict(self.config.model).items() if k != "device"}
        args = StageArgs(stage=stage, input_endpoint=self.endpoint(stage), output_endpoint=self.endpoint(outputs[stage]),
                         control_endpoint=self.endpoint("control"), model=model, device=self.config.device(stage),
                         threads=self.config.stage_threads(stage), options={"max_inflight": self.config.max_inflight,
                                   "max_queue": stage_queue(self.config),
                                   "voices_dir": str(self.config.voices_root()),  # T3 and CFM load stored voices
                                   **self.config.stage_options})
        p = mp.get_context("spawn").Process(target=entries[stage], args=(args,), name=f"tts-{stage}", daemon=True)
        p.start()
        with self.lock:
            old, self.processes[stage] = self.processes.get(stage), p
            self.health[stage].pid = p.pid
        if old is not None:  # a restart: release the dead one's sentinel fd and pipes (restarts must not leak fds)
            try:
                old.close()
            except ValueError:  # not reaped yet (the watcher joined it, so it should be): the GC closes it later
                pass

    def start(self) -> None:
        self._control = self.sockets.socket("PULL", self.endpoint("control"))
        for stage in STAGES:
            self._spawn(stage)
        self._wait_ready(set(STAGES))

    def _wait_ready(self, pending: set[str]) -> None:
        """Wait for `ready` from every stage in `pending`; PipelineStartError names the one that failed."""
        control = self._control
        deadline = time.monotonic() + READY_TIMEOUT_S
        while pending:
            if self._stopping.is_set():
                raise PipelineStartError("stopped while stage(s) " + ", ".join(sorted(pending)) + " were starting")
            if time.monotonic() > deadline:
                raise PipelineStartError(f"stage(s) {', '.join(sorted(pending))} not ready after {READY_TIMEOUT_S:.0f} s")
            if control.poll(100):
                try:
                    msg = framing.recv(control)
                except ProtocolError as e:
                    raise PipelineStartError(f"malformed control message: {e}") from None
                if isinstance(msg, Error) and msg.stage in pending:
                    raise PipelineStartError(f"stage {msg.stage} failed to start: {msg.message}")
                if isinstance(msg, Ready) and msg.stage in pending and msg.pid == self.processes[msg.stage].pid:
                    pending.discard(msg.stage)
                    with self.lock:
                        self.health[msg.stage].state = "up"
                    log.info("stage %s ready (pid %d)", msg.stage, msg.pid)
            for stage in list(pending):
                code = self.processes[stage].exitcode
                if code is not None and not control.poll(0):
                    raise PipelineStartError(f"stage {stage} exited during start-up (exit code {code})")

    def _death_reason(self, stage: str) -> str:
        """The fatal error a stage reported on the control socket before it died, if any."""
        reason = ""
        while self._control.poll(0):
            try:
                msg = framing.recv(self._control)
            except ProtocolError:
                continue
            if isinstance(msg, Error) and msg.stage == stage:
                reason = msg.message
        return reason

    def watch(self, on_death: Callable[[str, str], None], on_ready: Callable[[str], None] | None = None,
              on_give_up: Callable[[str], None] | None = None) -> threading.Thread:
        """Supervise from a thread: on a stage's death call on_death(stage, message) at once, restart it, then on_ready(stage).

        When the restart budget is spent (or a restart fails) call on_give_up(message) and stop restarting.
        """

        def run() -> None:
            try:
                while not self._stopping.is_set():
                    with self.lock:
                        by_sentinel = {p.sentinel: stage for stage, p in self.processes.items()}
                    done = wait([*by_sentinel, self._wake_r])
                    if self._stopping.is_set():
                        return
                    for sentinel in done:
                        if sentinel in by_sentinel and not self._stopping.is_set():
                            if not self._recover(by_sentinel[sentinel], on_death, on_ready, on_give_up):
                                return
            except Exception:  # a bug here must not pass silently: the pipeline cannot heal any more
                log.exception("stage supervision failed")
                if on_give_up is not None and not self._stopping.is_set():
                    on_give_up("stage supervision failed (see the log)")

        self._watcher = threading.Thread(target=run, name="tts-stage-watch", daemon=True)
        self._watcher.start()
        return self._watcher

    def _recover(self, stage: str, on_death, on_ready, on_give_up) -> bool:
        """Handle one stage's death: report it, restart it within the budget. False once given up."""
        while True:
            p = self.processes[stage]
            p.join(1.0)  # its sentinel said it ended: this reaps it
            message = f"stage {stage} (pid {p.pid}) died (exit code {p.exitcode})"
            reason = self._death_reason(stage)
            if reason:
                message += f": {reason}"
            log.error("%s", message)
            now = time.monotonic()
            while self._restart_times and now - self._restart_times[0] > self.config.restart_window_s:
                self._restart_times.popleft()
            spent = len(self._restart_times) >= self.config.restart_budget
            with self.lock:
                h = self.health[stage]
                h.state, h.last_death = ("failed" if spent else "restarting"), message
            on_death(stage, message)
            if spent:
                return self._give_up(f"{message}; {len(self._restart_times)} restart(s) within "
                                     f"{self.config.restart_window_s:g} s already (budget {self.config.restart_budget}): "
                                     "giving up", on_give_up)
            delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** len(self._restart_times))
            self._restart_times.append(now)
            if self._stopping.wait(delay):
                return False
            log.warning("restarting stage %s (restart %d, after %.2f s)", stage, self.health[stage].restarts + 1, delay)
            try:
                self._spawn(stage)
                with self.lock:
                    self.health[stage].restarts += 1
                self._wait_ready({stage})
            except PipelineStartError as e:
                if self._stopping.is_set():
                    return False
                self.processes[stage].join(1.0)  # a stage that reported a start-up error exits right after
                if self.processes[stage].is_alive():  # it is up but not ready (timeout): a restart that failed
                    return self._give_up(f"restart of stage {stage} failed: {e}", on_give_up)
                continue  # it died again while starting: that is one more death
            log.warning("stage %s is back (pid %d)", stage, self.processes[stage].pid)
            if on_ready is not None:
                on_ready(stage)
            return True

    def _give_up(self, message: str, on_give_up) -> bool:
        log.error("%s", message)
        with self.lock:
            self.gave_up = message
        if on_give_up is not None:
            on_give_up(message)
        return False

    def pids(self) -> dict[str, int]:
        with self.lock:
            return {stage: p.pid for stage, p in self.processes.items()}

    def snapshot(self) -> dict[str, StageHealth]:
        """A copy of every stage's health, with liveness read now."""
        with self.lock:
            out = {}
            for stage, h in self.health.items():
                p = self.processes.get(stage)
                state = h.state
                if state == "up" and (p is None or not p.is_alive()):
                    state = "restarting" if not self.gave_up else "failed"  # dead, the watcher not yet woken
                out[stage] = StageHealth(state, h.pid, h.restarts, h.last_death)
            return out

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every stage, SIGKILL what is still there after timeout_s (0: SIGKILL at once)."""
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(2.0)  # it leaves a restart at the next poll (100 ms)
        with self.lock:
            procs = list(self.processes.values())
        for p in procs:
            if p.is_alive():
                p.kill() if timeout_s <= 0 else p.terminate()
        deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
        with self.lock:
            for h in self.health.values():
                h.state = "stopped"
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
