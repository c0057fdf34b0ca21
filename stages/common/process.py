"""The shared stage process: start-up (die with the parent, name itself, log, load, warm up, report ready) and the loop.

Every stage process runs `stage_main`, started with torch.multiprocessing's spawn method.
The stage's logic is a plain `StageWorker` (no sockets, driven in-process by tests); this
module only moves messages between its sockets and the worker.
"""
from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ipc import framing
from ipc.schema import Cancel, End, Error, Message, ProtocolError, Ready

POLL_MS = 200  # idle wake-up to notice a dead parent even when no message comes
DRAIN_MAX = 64  # messages taken per wake-up before doing a unit of work (keeps T3 decoding fair)
PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1  # prctl options (linux/prctl.h)


class StageWorker(Protocol):
    """A stage's logic: messages in, messages out, plus optional work of its own (T3's decode steps)."""

    name: str

    def handle(self, msg: Message) -> list[Message]: ...

    def busy(self) -> bool: ...

    def work(self) -> list[Message]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StageArgs:
    """What the launcher passes to a stage process (plain values: it crosses the spawn boundary)."""

    stage: str
    input_endpoint: str  # PULL, bound by this stage
    output_endpoint: str  # PUSH, connected to the next stage (or the coordinator)
    control_endpoint: str  # PUSH, connected to the launcher: ready / fatal error
    model: dict[str, Any]  # ModelSpec fields
    device: str = "cpu"
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)


def _prctl(option: int, value: Any) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the liveness check in the loop still ends us
        pass


def _bootstrap(stage: str) -> logging.Logger:
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the kernel ends us when the launcher dies
    _prctl(PR_SET_NAME, f"tts-{stage}".encode()[:15])
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("TTS_LOG_LEVEL", "WARNING"),
                        format=f"%(asctime)s {stage}[{os.getpid()}] %(levelname)s %(message)s")

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    return logging.getLogger(f"tts.{stage}")


def stage_main(args: StageArgs, make_worker: Callable[[StageArgs], StageWorker]) -> None:
    """Entry of every stage process."""
    import torch
    import zmq

    from ipc.sockets import SocketFactory

    log = _bootstrap(args.stage)
    parent = os.getppid()
    torch.set_num_threads(max(1, args.threads))
    with SocketFactory() as sockets:
        control = sockets.socket("PUSH", args.control_endpoint)
        worker = None
        try:
            pull = sockets.socket("PULL", args.input_endpoint)
            push = sockets.socket("PUSH", args.output_endpoint)
            stream = None
            if args.device.startswith("cuda"):
                torch.cuda.set_device(torch.device(args.device))
                stream = torch.cuda.Stream()  # this stage's own stream
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                worker = make_worker(args)
            log.info("loaded and warmed up on %s with %d thread(s)", args.device, torch.get_num_threads())
            framing.send(control, Ready(rid=args.stage, stage=args.stage, pid=os.getpid(), info={"device": args.device}))
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                _loop(worker, pull, push, parent, log, zmq)
        except SystemExit:
            pass
        except BaseException as e:  # report why we are dying, then die
            log.exception("fatal error")
            framing.send(control, Error(rid=args.stage, stage=args.stage, message=f"{type(e).__name__}: {e}"))
            raise SystemExit(1)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # already on the way out: a second TERM must not interrupt cleanup
            if worker is not None:
                worker.close()
            log.info("exiting")


class _Timing:
    """Per-request seconds spent computing (busy) and in ZeroMQ + (de)serialisation (wire) in this stage.

    They travel downstream in the request's end sentinel (`stats`), merged with the
    upstream stages' figures, so the benchmark can attribute latency without clocks
    shared between processes. `end_ts.<stage>` is the Unix time the stage sent the end:
    on one host it orders events across stages (e.g. a request's T3 finishing before the
    previous request's HiFiGAN).
    """

    def __init__(self, stage: str):
        self.stage = stage
        self.busy: dict[str, float] = {}
        self.wire: dict[str, float] = {}
        self.upstream: dict[str, dict[str, float]] = {}

    def add(self, rid: str, busy: float, wire: float) -> None:
        self.busy[rid] = self.busy.get(rid, 0.0) + busy
        self.wire[rid] = self.wire.get(rid, 0.0) + wire

    def seal(self, msg: Message) -> Message:
        """Attach this request's figures to our end sentinel (and forget them)."""
        if isinstance(msg, End):
            stats = {**self.upstream.pop(msg.rid, {}), **msg.stats,
                     f"busy_s.{self.stage}": self.busy.pop(msg.rid, 0.0), f"wire_s.{self.stage}": self.wire.pop(msg.rid, 0.0),
                     f"end_ts.{self.stage}": time.time()}  # Unix time this stage finished the request (ordering across stages)
            return dataclasses.replace(msg, stats=stats)
        if isinstance(msg, (Error, Cancel)):
            self.busy.pop(msg.rid, None), self.wire.pop(msg.rid, None), self.upstream.pop(msg.rid, None)
        return msg


def _send_all(push, outs: list[Message], timing: _Timing) -> float:
    t = time.perf_counter()
    for out in outs:
        framing.send(push, timing.seal(out))
    return time.perf_counter() - t


def _loop(worker: StageWorker, pull, push, parent: int, log: logging.Logger, zmq) -> None:
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    timing = _Timing(worker.name)
    while True:
        ready = poller.poll(0 if worker.busy() else POLL_MS)
        for _ in range(DRAIN_MAX if ready else 0):
            t0 = time.perf_counter()
            try:
                msg = framing.recv(pull, zmq.NOBLOCK)
            except zmq.Again:
                break
            except ProtocolError as e:  # nothing to attribute it to: drop it, say so, carry on
                log.error("dropped a malformed message: %s", e)
                continue
            t1 = time.perf_counter()
            if isinstance(msg, End) and msg.stats:
                timing.upstream[msg.rid] = dict(msg.stats)
            outs = worker.handle(msg)
            t2 = time.perf_counter()
            timing.add(msg.rid, t2 - t1, t1 - t0)
            sent = _send_all(push, outs, timing)
            timing.add(msg.rid, 0.0, sent)
        if worker.busy():
            t1 = time.perf_counter()
            outs = worker.work()
            t2 = time.perf_counter()
            if outs:
                rid = outs[0].rid
                timing.add(rid, t2 - t1, 0.0)  # before sending: an end sentinel carries its own step's time
                sent = _send_all(push, outs, timing)
                timing.add(rid, 0.0, sent)
        if os.getppid() != parent:  # the launcher is gone (PDEATHSIG covers Linux; this covers the rest)
            log.warning("launcher exited; stopping")
            return
