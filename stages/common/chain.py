"""The shape shared by the stages fed by another stage (CFM, HiFiGAN): per-request job queues, batched work, errors passed down the chain.

`ChainWorker` follows the stage loop's contract (stages/common/process.py): `handle(msg)` is
cheap (state changes and enqueueing only, never model compute), `busy()` says whether work is
pending and `work()` runs one unit of compute for several requests at once. A subclass says
what a request's start, data and end turn into (chunk jobs in the request's `Lane`) and
implements `work()`; this class keeps the bounded per-request map and every rule of robustness:

- a cancel or an error drops the request's queued jobs and frees its state at once (it does
  not wait behind the request's queued work), and is forwarded down the chain, also for ids
  this stage does not know (a later stage or the coordinator may still hold the request);
- a duplicate request id is that request's error, never the stage's death;
- a message of an unknown request is dropped with a (rate-limited) log line;
- any exception while handling a message or completing a job becomes that request's error.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

from ipc.schema import Cancel, End, Error, Message, Request
from stages.common.lanes import BatchLimits, Lane
from stages.common.params import is_continuation
from stages.common.requests import RequestTable, forward

log = logging.getLogger("tts.stage")

DEFAULT_MAX_INFLIGHT = 4  # the launcher's default --max-inflight
DEFAULT_MAX_QUEUE = 60  # without --max-queue a stage keeps its earlier bound of 64 requests
DROP_LOG_INTERVAL_S = 1.0  # at most one "dropped" log line per second (a flood must not flood stderr)
ERROR_TEXT_LIMIT = 2000  # characters of an error's text: it may echo a bad value, and must still fit the wire's limit


def stage_capacity(options: Mapping[str, Any]) -> int:
    """Requests a stage holds at once: the coordinator admits at most max_inflight + max_queue, so an admitted request is never refused here."""
    return int(options.get("max_inflight", DEFAULT_MAX_INFLIGHT)) + int(options.get("max_queue", DEFAULT_MAX_QUEUE))


def exact_batching(options: Mapping[str, Any], device: str) -> bool:
    """Whether a chain stage computes each batched job with its own solo call (bit-identical to it) or pads them into one call.

    `options["exact_batching"]` if given; else exact on a CPU, where one padded call gains at most
    ~25 % (benchmarks/results/batching-*.md) and would make a request's audio depend, in its last
    bits, on which requests shared its batch; padded on a GPU, where one call costs about what one
    job does and kernels are not bit-reproducible across shapes anyway.
    """
    value = options.get("exact_batching")
    return str(device).startswith("cpu") if value is None else bool(value)


class DuplicateRequest(ValueError):
    """A `request` arrived for an id this stage already holds."""


@dataclass
class Slot:
    """One request in a chain stage: the stage's own state and its queue of chunk jobs."""

    state: Any
    lane: Lane
    end: End | None = None  # the upstream end sentinel, once it arrived: sent on after the last job


class _DropLog:
    """Logs dropped messages at most once per DROP_LOG_INTERVAL_S, with the count since the last line."""

    def __init__(self, stage: str):
        self.stage, self.count, self.last = stage, 0, -float("inf")

    def note(self, kind: str, rid: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= DROP_LOG_INTERVAL_S:
            log.warning("%s: %s for unknown request %r dropped (%d dropped since the last note)", self.stage, kind, rid[:64], self.count)
            self.count, self.last = 0, now


class ChainWorker:
    name = "stage"

    def __init__(self, capacity: int, limits: BatchLimits):
        self.table: RequestTable[Slot] = RequestTable(self.name, capacity)
        self.limits = limits
        self.tick = 0  # units of work done (the clock of the lanes' age bound)
        self.served: list[str] = []  # the requests the last unit of work computed for (to share its time among them)
        self._order = itertools.count()
        self._drops = _DropLog(self.name)

    # --- what a stage implements (all cheap except work) --------------------------------
    def start(self, req: Request) -> tuple[Any, list[Message]]:
        """New per-request state, and the messages to send at once (e.g. the request, forwarded)."""
        raise NotImplementedError

    def data(self, msg: Message, state: Any) -> list[Any]:
        """A data message: check it, update the state, return the chunk jobs it makes (possibly none)."""
        raise NotImplementedError

    def end(self, msg: End, state: Any) -> list[Any]:
        """The upstream end: check the totals, return the final chunk jobs."""
        raise NotImplementedError

    def finish(self, msg: End, state: Any) -> list[Message]:
        """This stage's own end sentinel, once every job of the request has run."""
        raise NotImplementedError

    def settle(self, state: Any, job: Any) -> bool:
        """Apply a head job now if it needs no model call (True = done); the default: every job needs one."""
        return False

    def forget(self, rid: str) -> None:
        """Drop anything of `rid` held outside its state (e.g. its rows in a running batch)."""

    def work(self) -> list[Message]:
        raise NotImplementedError

    # --- the shared part --------------------------------------------------------------
    def handle(self, msg: Message) -> list[Message]:
        rid = msg.rid
        if isinstance(msg, (Cancel, Error)):  # overtakes the request's queued work: freed now, passed on
            self.forget(rid)
            return [forward(msg, self.table)]
        try:
            if isinstance(msg, Request):
                if rid in self.table:
                    raise DuplicateRequest(f"{self.name}: request id {rid!r} is already in flight")
                state, out = self.start(msg)
                # a continuation (segment k > 0 of a long-form request) has audio playing already: no priority lane
                lane = Lane(order=next(self._order), first=not is_continuation(msg.params))
                self.table.add(rid, Slot(state, lane))
                return [dataclasses.replace(m, seq=self.table.seq(rid)) for m in out]  # our numbering, from 0
            slot = self.table.get(rid)
            if slot is None:
                self._drops.note(msg.KIND, rid)
                return []
            if slot.end is not None:
                raise RuntimeError(f"{msg.KIND} after the end of the stream")
            if isinstance(msg, End):
                jobs = self.end(msg, slot.state)
                slot.end = msg
            else:
                jobs = self.data(msg, slot.state)
            slot.lane.push(jobs, self.tick)
            return self._settle(rid, slot)
        except Exception as e:  # this request fails; the stage and the other requests carry on
            return [self.fail(rid, e)]

    def busy(self) -> bool:
        return any(self.table.get(rid).lane.jobs for rid in self.table)

    def heads(self) -> list[tuple[str, Slot]]:
        """Requests with a job ready, in service order (the priority lane first, see stages/common/lanes.py)."""
        ready = [(rid, self.table.get(rid)) for rid in self.table]
        ready = [(rid, s) for rid, s in ready if s.lane.jobs]
        ready.sort(key=lambda item: item[1].lane.key(self.tick, self.limits.age_limit))
        return ready

    def job_done(self, rid: str) -> list[Message]:
        """The request's head job ran and its output was sent: the next job becomes the head (or the request ends)."""
        slot = self.table.get(rid)
        slot.lane.done(self.tick)
        return self._settle(rid, slot)

    def fail(self, rid: str, exc: BaseException | str) -> Error:
        """`rid` fails in this stage: its state and queued jobs are freed, the error goes down the chain."""
        text = exc if isinstance(exc, str) else str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        if len(text) > ERROR_TEXT_LIMIT:
            text = text[: ERROR_TEXT_LIMIT - 3] + "..."
        log.warning("%s: request %s failed: %s", self.name, rid[:64], text)
        self.forget(rid)
        return self.table.error(rid, text)

    def _settle(self, rid: str, slot: Slot) -> list[Message]:
        """Apply head jobs that need no model call; once the queue is empty after the end, send our end and free."""
        lane = slot.lane
        while lane.jobs and self.settle(slot.state, lane.jobs[0]):
            lane.skip(self.tick)  # it emitted nothing: the request's first chunk is still to come
        if not lane.jobs and slot.end is not None:
            out = self.finish(slot.end, slot.state)
            self.forget(rid)
            self.table.pop(rid)
            return out
        return []

    def close(self) -> None:
        for rid in list(self.table):
            self.forget(rid)
        self.table.close()
