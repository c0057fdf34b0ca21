"""The shared stage process: start-up (die with the parent, name itself, log, load, warm up, report ready) and the loop.

Every stage process runs `stage_main`, started with torch.multiprocessing's spawn method.
The stage's logic is a plain `StageWorker` (no sockets, driven in-process by tests); this
module only moves messages between its sockets and the worker.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ipc import framing
from ipc.schema import Error, Message, ProtocolError, Ready

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
            with torch.cuda.stream(stream) if stream is not None else _nullcontext():
                worker = make_worker(args)
            log.info("loaded and warmed up on %s with %d thread(s)", args.device, torch.get_num_threads())
            framing.send(control, Ready(rid=args.stage, stage=args.stage, pid=os.getpid(), info={"device": args.device}))
            with torch.cuda.stream(stream) if stream is not None else _nullcontext():
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


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _loop(worker: StageWorker, pull, push, parent: int, log: logging.Logger, zmq) -> None:
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    while True:
        ready = poller.poll(0 if worker.busy() else POLL_MS)
        for _ in range(DRAIN_MAX if ready else 0):
            try:
                msg = framing.recv(pull, zmq.NOBLOCK)
            except zmq.Again:
                break
            except ProtocolError as e:  # nothing to attribute it to: drop it, say so, carry on
                log.error("dropped a malformed message: %s", e)
                continue
            for out in worker.handle(msg):
                framing.send(push, out)
        if worker.busy():
            for out in worker.work():
                framing.send(push, out)
        if os.getppid() != parent:  # the launcher is gone (PDEATHSIG covers Linux; this covers the rest)
            log.warning("launcher exited; stopping")
            return
