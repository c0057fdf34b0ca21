"""The shared stage process: start-up (watch the parent, name itself, log, load, warm up, report ready) and the loop.

Every stage process runs `stage_main`, started with torch.multiprocessing's spawn method.
The stage's logic is a plain `StageWorker` (no sockets, driven in-process by tests and by
the single-process path); this module only moves messages between its sockets and the worker.

The loop contract (every stage worker codes against it)
-------------------------------------------------------
One iteration of the loop:

1. wait for input (at most POLL_MS) unless the worker is busy;
2. **drain the input**: take every message already queued on the input socket, at most
   DRAIN_MAX per iteration (more than the link's two high-water marks hold, so everything
   queued, a cancel included, is seen), and for each call `worker.handle(msg)` and send what
   it returns;
3. if `worker.busy()`: call `worker.work()` once and send what it returns.

So a cancel (or an error) that arrives while a request has work queued is handled before the
next unit of work: `handle` can drop that request's queued work and free its state at once.

* `handle(msg) -> list[Message]` is **cheap**: state changes and enqueueing only (create or
  free a request's state, validate its parameters, queue its data). No model compute. Every
  message passes through it, cancels and errors included, also for request ids the worker
  does not know (it forwards those down the chain: the later stages free their state from them).
* `busy() -> bool`: whether `work()` has something to do; called every iteration, so cheap.
* `work() -> list[Message]`: **one unit of model compute** over everything ready, then return
  (T3: admit waiting requests with one batched prefill, then one decode tick for every active
  request; CFM / HiFiGAN: one batched call over the chunks that are ready). Returning after one
  unit is what lets the loop take new input (cancels, new requests) between units.
* Errors: a request's failure is that request's `Error` message, returned by `handle` or
  `work`; the stage and the other requests carry on. As a safety net, an exception escaping
  `handle(msg)` is logged and turned into an `Error` for `msg.rid`, which is passed to
  `handle` itself (so the worker frees the request) and sent on; no message can kill a stage.
  A malformed message (one that does not decode) is dropped with a log line. An exception
  escaping `work()` is a bug of the stage, not of one request: the stage reports it on the
  control socket and exits (the "engine died" error; the launcher fails its requests).
* Timing: the seconds of a `handle` call count for its message's request; the seconds of a
  `work` call are shared equally by the requests it computed for (`worker.served`, where the
  worker says: a CFM solver step may send nothing), else by those its output messages belong to. They travel in
  each request's end sentinel (`stats`, see `_Timing`).
* `close()`: free everything (called once on the way out).

Exit: SIGTERM (the launcher's stop) or the launcher process ending (a pidfd of the parent
process, watched by a thread: this follows the *process*, not the thread that spawned us, and
covers start-up too) ends the stage at once: the worker is closed, sockets close with a short
linger, and the process leaves with `os._exit` (no interpreter teardown).
"""
from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import select
import signal
import sys
import threading
import time
from contextlib import nullcontext
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ipc import framing
from ipc.schema import Cancel, End, Error, Message, ProtocolError, Ready

POLL_MS = 200  # idle wake-up (also the fallback check of the parent where there is no pidfd)
# Messages handled per iteration before the next unit of work: a stage link holds at most
# 2 x 64 messages (PUSH and PULL high-water marks, ipc/sockets.py), so 1024 takes everything
# queued, a cancel included; the bound still lets work run during a flood of input.
DRAIN_MAX = 1024
EXIT_LINGER_MS = 100  # on the way out, queued sends get this long to reach a live peer
MAX_ERROR_CHARS = 2000  # error texts are cut to this (the wire's own limit is 16384)
PR_SET_NAME = 15  # prctl option (linux/prctl.h)
MAX_TIMED = 4096  # requests whose timings are kept: far above any stage's max_inflight + max_queue


class StageWorker(Protocol):
    """A stage's logic: messages in, messages out, plus its own units of work (see the loop contract above)."""

    name: str

    def handle(self, msg: Message) -> list[Message]: ...

    def busy(self) -> bool: ...

    def work(self) -> list[Message]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StageArgs:
    """What the launcher passes to a stage process (plain values: it crosses the spawn boundary).

    `options` carries the admission limits: "max_inflight" (active requests) and "max_queue"
    (requests waiting beyond those); each stage sizes its own bounds from them.
    """

    stage: str
    input_endpoint: str  # PULL, bound by this stage
    output_endpoint: str  # PUSH, connected to the next stage (or the coordinator)
    control_endpoint: str  # PUSH, connected to the launcher: ready / fatal error
    model: dict[str, Any]  # ModelSpec fields
    device: str = "cpu"
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)


def error_text(exc: BaseException | str) -> str:
    """An exception as one error message, cut to MAX_ERROR_CHARS (a bad value may be echoed in it)."""
    text = exc if isinstance(exc, str) else str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


def _set_name(stage: str) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_NAME, f"tts-{stage}".encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the name is cosmetic
        pass


def _watch_parent(log: logging.Logger) -> Callable[[], bool]:
    """End this process (SIGTERM to itself) when the launcher *process* ends; returns a liveness check.

    PR_SET_PDEATHSIG would follow the thread that spawned us (a Pipeline started from a short-lived
    thread would die with it), so we wait on a pidfd of the parent process instead.
    """
    parent = os.getppid()
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfds (not Linux >= 5.3): the loop polls getppid instead
        return lambda: os.getppid() == parent

    def wait() -> None:
        select.select([fd], [], [])
        log.warning("launcher (pid %d) exited; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="tts-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # it ended before the pidfd was open
        os.kill(os.getpid(), signal.SIGTERM)
    return lambda: True


def _bootstrap(stage: str) -> tuple[logging.Logger, Callable[[], bool]]:
    _set_name(stage)
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("TTS_LOG_LEVEL", "WARNING"),
                        format=f"%(asctime)s {stage}[{os.getpid()}] %(levelname)s %(message)s")
    log = logging.getLogger(f"tts.{stage}")

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    return log, _watch_parent(log)


def stage_main(args: StageArgs, make_worker: Callable[[StageArgs], StageWorker]) -> None:
    """Entry of every stage process. Never returns: the process ends with os._exit."""
    code = 1
    try:
        log, parent_alive = _bootstrap(args.stage)
        code = _run(args, make_worker, log, parent_alive)
    finally:
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)  # no interpreter teardown: the stage is done and everything it holds is closed


def _run(args: StageArgs, make_worker, log: logging.Logger, parent_alive) -> int:
    import torch
    import zmq

    from ipc.sockets import SocketFactory

    torch.set_num_threads(max(1, args.threads))
    with SocketFactory(linger_ms=EXIT_LINGER_MS) as sockets:
        control = sockets.socket("PUSH", args.control_endpoint)
        worker = None
        try:
            pull = sockets.socket("PULL", args.input_endpoint)
            push = sockets.socket("PUSH", args.output_endpoint)
            stream = None
            if args.device.startswith("cuda"):
                device = torch.device(args.device)
                if device.index is not None:  # plain "cuda" means the current device
                    torch.cuda.set_device(device)
                stream = torch.cuda.Stream()  # this stage's own stream
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                worker = make_worker(args)
                log.info("loaded and warmed up on %s with %d thread(s)", args.device, torch.get_num_threads())
                framing.send(control, Ready(rid=args.stage, stage=args.stage, pid=os.getpid(), info={"device": args.device}))
                _loop(worker, pull, push, parent_alive, log, zmq)
            return 0
        except SystemExit as e:  # SIGTERM or the launcher gone
            return e.code if isinstance(e.code, int) else 0
        except BaseException as e:  # report why we are dying, then die
            # the traceback is for developers (-v sets INFO); the reason reaches the user through the launcher
            log.error("fatal error: %s", error_text(e), exc_info=log.isEnabledFor(logging.INFO))
            try:
                framing.send(control, Error(rid=args.stage, stage=args.stage, message=error_text(e)), flags=zmq.NOBLOCK)
            except Exception:  # the launcher is not listening: nothing more to tell
                pass
            return 1
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # already on the way out: a second TERM must not interrupt cleanup
            if worker is not None:
                try:
                    worker.close()
                except Exception:
                    log.exception("closing the worker failed")
            log.info("exiting")


class _Timing:
    """Per-request seconds spent computing (busy) and in ZeroMQ + (de)serialisation (wire) in this stage.

    They travel downstream in the request's end sentinel (`stats`), merged with the
    upstream stages' figures, so the benchmark can attribute latency without clocks
    shared between processes. `end_ts.<stage>` is the Unix time the stage sent the end:
    on one host it orders events across stages (e.g. a request's T3 finishing before the
    previous request's HiFiGAN). Bounded: messages for ids that never end (a hostile sender)
    cannot grow it past MAX_TIMED requests (the oldest are forgotten).
    """

    def __init__(self, stage: str):
        self.stage = stage
        self.figures: OrderedDict[str, list[float]] = OrderedDict()  # rid -> [busy, wire]
        self.upstream: OrderedDict[str, dict[str, float]] = OrderedDict()

    def add(self, rid: str, busy: float, wire: float) -> None:
        f = self.figures.get(rid)
        if f is None:
            f = self.figures[rid] = [0.0, 0.0]
            if len(self.figures) > MAX_TIMED:
                self.figures.popitem(last=False)
        f[0] += busy
        f[1] += wire

    def share(self, outs: list[Message], busy: float, wire: float, rids: list[str] | None = None) -> None:
        """Split one unit of work's seconds equally between `rids` (default: the requests it produced messages for)."""
        rids = list(dict.fromkeys(rids or [m.rid for m in outs]))
        for rid in rids:
            self.add(rid, busy / len(rids), wire / len(rids))

    def note_upstream(self, msg: End) -> None:
        self.upstream[msg.rid] = dict(msg.stats)
        if len(self.upstream) > MAX_TIMED:
            self.upstream.popitem(last=False)

    def seal(self, msg: Message) -> Message:
        """Attach this request's figures to our end sentinel (and forget them)."""
        if isinstance(msg, End):
            busy, wire = self.figures.pop(msg.rid, (0.0, 0.0))
            stats = {**self.upstream.pop(msg.rid, {}), **msg.stats,
                     f"busy_s.{self.stage}": busy, f"wire_s.{self.stage}": wire,
                     f"end_ts.{self.stage}": time.time()}  # Unix time this stage finished the request (ordering across stages)
            return dataclasses.replace(msg, stats=stats)
        if isinstance(msg, (Error, Cancel)):
            self.figures.pop(msg.rid, None), self.upstream.pop(msg.rid, None)
        return msg


def _send_all(push, outs: list[Message], timing: _Timing, stage: str, log: logging.Logger) -> float:
    """Send every message; one that cannot be encoded becomes its request's error (never the stage's death)."""
    t = time.perf_counter()
    for out in outs:
        try:
            framing.send(push, timing.seal(out))
        except ProtocolError as e:
            log.error("could not encode a %s message of %s: %s", out.KIND, out.rid, e)
            if not isinstance(out, Error):
                framing.send(push, Error(rid=out.rid, seq=out.seq, stage=stage,
                                         message=error_text(f"{stage} produced an invalid {out.KIND} message: {e}")))
    return time.perf_counter() - t


def _ends(outs: list[Message], rid: str) -> bool:
    """Whether `outs` holds a terminal message of `rid` (its figures are sealed and gone)."""
    return any(m.rid == rid and isinstance(m, (End, Error, Cancel)) for m in outs)


def _handle(worker: StageWorker, msg: Message, log: logging.Logger) -> list[Message]:
    """worker.handle(msg) under the per-request safety net: an exception fails msg's request only."""
    try:
        return worker.handle(msg)
    except Exception as e:
        log.exception("%s: handling a %s of %s failed", worker.name, msg.KIND, msg.rid)
        err = Error(rid=msg.rid, stage=worker.name, message=error_text(e))
        try:
            return worker.handle(err)  # the worker frees the request and forwards the error
        except Exception:
            log.exception("%s: freeing %s failed", worker.name, msg.rid)
            return [err]


def _loop(worker: StageWorker, pull, push, parent_alive: Callable[[], bool], log: logging.Logger, zmq) -> None:
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    timing = _Timing(worker.name)
    while True:
        if not worker.busy():
            poller.poll(POLL_MS)
        for _ in range(DRAIN_MAX):
            t0 = time.perf_counter()
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                msg = framing.decode(frames)
            except ProtocolError as e:  # nothing to attribute it to: drop it, say so, carry on
                log.warning("dropped a malformed message: %s", e)
                continue
            t1 = time.perf_counter()
            if isinstance(msg, End) and msg.stats:
                timing.note_upstream(msg)
            outs = _handle(worker, msg, log)
            timing.add(msg.rid, time.perf_counter() - t1, t1 - t0)
            sent = _send_all(push, outs, timing, worker.name, log)
            if not _ends(outs, msg.rid):
                timing.add(msg.rid, 0.0, sent)
        if worker.busy():
            t1 = time.perf_counter()
            outs = worker.work()
            served = getattr(worker, "served", None)  # chain stages: the requests the unit computed for (a CFM step may send nothing)
            if outs or served:
                timing.share(outs, time.perf_counter() - t1, 0.0, served)  # before sending: an end carries its own unit's time
            if outs:
                sent = _send_all(push, outs, timing, worker.name, log)
                timing.share([m for m in outs if not _ends(outs, m.rid)], 0.0, sent)
        if not parent_alive():
            log.warning("launcher exited; stopping")
            return
