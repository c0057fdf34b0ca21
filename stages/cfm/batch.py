"""The CFM stage's running batch: the chunk jobs of several requests solved together, one unit of work per solver step.

Driven by the CFM worker (stages/cfm/worker.py: jobs join and leave between steps) and by
`run_flow_jobs` (the solo path of `CFMStream.push/finish`, a batch that runs its jobs to the
end). Pure tensor code: no sockets. The solver step is the flow's own (`Flow.step_inputs`,
`Flow.step`, `Flow.time_grid`: cosine Euler with the CFG pair here, meanflow for Turbo).

Each row is one request's flow call (stages/cfm/streaming.py `FlowJob`): its own window,
noise, prompt condition, speaker vector and step count, sitting at its own step. The encoder
runs once per job when it joins, at the job's own length (`mu` is exactly the solo value; the
encoder is 2-8 % of a call, docs/cfm.md). A step then advances every row, in one of two ways:

- **exact** (the default on a CPU): each row takes its own estimator call at its own length,
  exactly the solo call, so every request's frames are bit-identical to its solo result
  whatever shares the batch (a batch is then a schedule, not a bigger matmul);
- **padded**: one estimator call for all rows, right-padded to one length (a bucket) with a
  padding mask. The estimator's convolutions are causal (a real frame reads only itself and
  earlier frames, never the padding on its right), its LayerNorms are per frame, its attention
  masks padded keys and its output is multiplied by the mask (padded frames of x stay 0), so a
  row's frames depend neither on the padding nor on the other rows; only the rounding of the
  batched kernels differs (tested: within 1e-5 relative of solo).

One row alone always runs as its solo call: a batch of one is bit-identical to `Flow.solve`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import torch
import torch.nn.functional as F

from stages.cfm.flow import Flow
from stages.common.lanes import BatchLimits, Shape


@dataclass
class _Row:
    key: Hashable
    job: Any  # a FlowJob
    grid: torch.Tensor  # [n_timesteps + 1] the row's time grid
    x: torch.Tensor  # [1, 80, F] the row's sample at its current time
    mu: torch.Tensor  # [1, 80, F]
    cond: torch.Tensor  # [1, 80, F]
    spks: torch.Tensor  # [1, 80]
    inputs: tuple  # the row's own step inputs (its solo call's)
    k: int = 0  # steps done

    @property
    def frames(self) -> int:
        return self.job.frames


class FlowBatch:
    """Rows of flow calls stepping together. `limits` bounds the rows and frames (None: unbounded); `exact` see above."""

    def __init__(self, flow: Flow, limits: BatchLimits | None = None, exact: bool = True):
        self.flow, self.limits, self.exact = flow, limits, exact
        self.rows: list[_Row] = []
        self._padded: tuple[tuple[Hashable, ...], int, tuple] | None = None  # (row keys, length, step inputs) of the padded batch
        # Captured solver steps (stages/cfm/graphs.py FlowGraphs), attached on CUDA for padded batching: None = eager.
        self.graphs: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: Hashable) -> bool:
        return any(r.key == key for r in self.rows)

    @property
    def length(self) -> int:
        """Frames each row is padded to in the next step (0: the rows run unpadded, each at its own length)."""
        if len(self.rows) < 2 or self.exact:
            return 0
        return self._length([r.frames for r in self.rows])

    def _length(self, frames: Sequence[int]) -> int:
        if self.limits is None:
            return max(frames)
        return self.limits.fits([Shape(f) for f in frames]) or max(frames)

    def can_admit(self, frames: int) -> bool:
        """Whether a job of `frames` frames may join now (an empty batch takes any job)."""
        if not self.rows or self.limits is None:
            return True
        sizes = [r.frames for r in self.rows] + [frames]
        if self.exact:  # no padding: the rows' own frames count
            return len(sizes) <= self.limits.max_jobs and sum(sizes) <= self.limits.max_units
        return self.limits.fits([Shape(f) for f in sizes]) is not None

    @torch.no_grad()
    def add(self, key: Hashable, job: Any) -> None:
        """Encode the job (at its own length) and add it as a row at step 0. Raises on bad tokens."""
        flow = self.flow
        mu = flow.encode(job.tokens, finalize=job.finalize)  # [1, 80, F]
        if mu.size(-1) != job.frames:
            raise RuntimeError(f"flow encoder returned {mu.size(-1)} frames, the job needs {job.frames}")
        dev, dt = mu.device, mu.dtype
        cond = torch.zeros_like(mu)  # [1, 80, F]: the prompt mel, then zeros
        cond[:, :, : job.prompt_cond.size(-1)] = job.prompt_cond
        spks = job.spks.to(dev, dt)  # [1, 80]
        mask = torch.ones(1, 1, mu.size(-1), device=dev, dtype=dt)  # [1, 1, F]
        self.rows.append(_Row(key, job, flow.time_grid(job.n_timesteps, dt, dev), job.noise.to(dev, dt), mu, cond, spks,
                              flow.step_inputs(mu, spks, cond, mask)))

    def drop(self, key: Hashable) -> None:
        """Remove the rows of `key` (a cancelled or failed request); the other rows carry on unchanged."""
        self.rows = [r for r in self.rows if r.key != key]

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, Any, torch.Tensor]]:
        """One solver step of every row; returns (key, job, mel [1, 80, F]) of the rows that reached t = 1 (and removes them)."""
        if not self.rows:
            return []
        stepped = self.graphs.step(self.rows) if self.graphs is not None and not self.exact else None
        if stepped is not None:  # a captured shape fit: every row padded to its bucket, one replay
            for r, x in zip(self.rows, stepped):
                r.x = x
        elif len(self.rows) == 1 or self.exact:
            for r in self.rows:  # each row's own call: the solo computation, bit for bit
                r.x = self.flow.step(r.x, r.inputs, r.grid[r.k : r.k + 1], r.grid[r.k + 1 : r.k + 2])
        else:
            self._padded_step()
        done = []
        for r in self.rows:
            r.k += 1
            if r.k == r.job.n_timesteps:
                done.append((r.key, r.job, r.x))
        if done:
            self.rows = [r for r in self.rows if r.k < r.job.n_timesteps]
        return done

    def _padded_step(self) -> None:
        rows, length = self.rows, self.length
        keys = tuple(r.key for r in rows)
        if self._padded is None or self._padded[:2] != (keys, length):  # the rows changed: new padded inputs
            def cat(ts):
                return torch.cat([F.pad(t, (0, length - t.size(-1))) for t in ts])  # [B, C, L]

            mask = cat([torch.ones_like(r.x[:, :1]) for r in rows])  # [B, 1, L] 1 = real frame
            inputs = self.flow.step_inputs(cat([r.mu for r in rows]), torch.cat([r.spks for r in rows]),
                                           cat([r.cond for r in rows]), mask)
            self._padded = (keys, length, inputs)
        x = torch.cat([F.pad(r.x, (0, length - r.frames)) for r in rows])  # [B, 80, L]
        t = torch.cat([r.grid[r.k : r.k + 1] for r in rows])  # [B]
        t_next = torch.cat([r.grid[r.k + 1 : r.k + 2] for r in rows])  # [B]
        x = self.flow.step(x, self._padded[2], t, t_next)
        for i, r in enumerate(rows):
            r.x = x[i : i + 1, :, : r.frames]


def run_flow_jobs(flow: Flow, jobs: Sequence[Any], exact: bool = True) -> list[torch.Tensor]:
    """Solve these jobs together to the end (one job: exactly `Flow.solve`).  -> [1, 80, F] each"""
    batch = FlowBatch(flow, exact=exact)
    for i, job in enumerate(jobs):
        batch.add(i, job)
    out: dict[int, torch.Tensor] = {}
    while batch.rows:
        for key, _, mel in batch.step():
            out[key] = mel
    return [out[i] for i in range(len(jobs))]
