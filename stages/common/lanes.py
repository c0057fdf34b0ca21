"""Which chunk jobs a CFM or HiFiGAN stage serves next: the priority lane, the age bound and the length buckets.

Used by the workers fed by another stage (stages/common/chain.py, stages/cfm/worker.py,
stages/hifigan/worker.py). Pure bookkeeping: no tensors, no sockets, no clocks (ages are
counted in units of work, so every decision is reproducible in a test).

The rule (docs/architecture.md, "Batching and the priority lane"):
- Each request has a FIFO queue of chunk jobs; only its head can run, so a request's chunks
  are computed and sent strictly in order.
- Heads are served in the order of `Lane.key`, in three groups, the head that became ready
  first going first within each: (0) later chunks that have waited `age_limit` units of
  work, (1) first chunks (the priority lane), (2) the other later chunks. A request with
  the parameter `continuation: true` (segment k > 0 of a long-form request, whose stream is
  already playing) has no first chunk in this sense: its chunks are all in groups 0 and 2. A first chunk
  therefore overtakes fresh later chunks of other requests, and a running request's next
  chunk waits at most `age_limit` units plus the other aged chunks ahead of it (at most one
  per running request), however many new requests arrive. A first chunk waits at most for
  the first chunks ready before it and the aged chunks of requests already running (which
  end); so nobody starves.
- A batched call pads every job to one length: a bucket (`bucket`) when several jobs share
  the call, the job's own length when it runs alone (so a batch of one is the solo call).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

BUCKETS_PER_OCTAVE = 4  # padded lengths step by 1/4 of the octave: <= 25 % padding, few distinct shapes


def bucket(n: int, step: int) -> int:
    """The padded length of a job of n units: n rounded up to a multiple of max(step, octave/4).

    n in (2^k, 2^(k+1)] rounds to 2^k * (1.25, 1.5, 1.75, 2), never finer than `step`, so the
    padding is at most 25 % (or `step` units) and a stage sees a handful of shapes.
    """
    if n <= 0:
        return 0
    octave = 1 << max(0, (n - 1).bit_length() - 1)  # 2^k < n <= 2^(k+1)
    grain = max(step, octave // BUCKETS_PER_OCTAVE)
    return math.ceil(n / grain) * grain


@dataclass(frozen=True)
class Shape:
    """What the batcher needs to know of a job before it runs."""

    size: int  # length in the stage's padding unit (mel frames in both stages)
    exact: bool = False  # True: the job's output would change if it were padded; it runs at its own length


def padded_length(shapes: Sequence[Shape], step: int) -> int | None:
    """The one length every job of a call is padded to, or None if these jobs cannot share a call.

    One job: its own size (the solo call, no padding). Several: the largest bucket, unless an
    `exact` job is present, which fixes the length to its size (every other job must fit in it).
    """
    if not shapes:
        return None
    if len(shapes) == 1:
        return shapes[0].size
    exact = {s.size for s in shapes if s.exact}
    if len(exact) > 1:
        return None
    longest = max(s.size for s in shapes)
    if exact:
        (length,) = exact
        return length if longest <= length else None
    return bucket(longest, step)


@dataclass(frozen=True)
class BatchLimits:
    """How large one batched call of a stage may grow, and how long a later chunk may be passed over."""

    max_jobs: int  # requests per call
    max_units: int  # padded units per call (jobs x padded length): bounds memory and the time of one call
    bucket_step: int  # finest bucket granularity, in units
    age_limit: int  # units of work a waiting head may be passed over before it becomes urgent

    def fits(self, shapes: Sequence[Shape]) -> int | None:
        """The padded length if these jobs may share one call (a single job always may), else None."""
        length = padded_length(shapes, self.bucket_step)
        if length is None:
            return None
        if len(shapes) > 1 and (len(shapes) > self.max_jobs or len(shapes) * length > self.max_units):
            return None
        return length


@dataclass
class Lane:
    """One request's queue of chunk jobs, and what its place in the service order rests on."""

    order: int  # admission order of the request (last tie-break)
    jobs: deque = field(default_factory=deque)
    first: bool = True  # the head is the request's first chunk (the priority lane)
    since: int = 0  # the unit of work at which the current head became the head

    def push(self, items: Iterable[Any], tick: int) -> None:
        was_empty = not self.jobs
        self.jobs.extend(items)
        if was_empty and self.jobs:
            self.since = tick

    def done(self, tick: int) -> Any:
        """The head ran: drop it; the next job (if any) becomes the head now."""
        head = self.jobs.popleft()
        self.first = False
        self.since = tick
        return head

    def skip(self, tick: int) -> Any:
        """The head needed no model call and emitted nothing: drop it; a first chunk stays to come."""
        head = self.jobs.popleft()
        self.since = tick
        return head

    def key(self, tick: int, age_limit: int) -> tuple[int, int, int]:
        """Sort key: a later chunk that waited age_limit units, then first chunks, then other later chunks; oldest head first in each."""
        if self.first:
            group = 1  # the priority lane
        else:
            group = 0 if tick - self.since >= age_limit else 2  # aged: a running stream must not underrun
        return (group, self.since, self.order)
