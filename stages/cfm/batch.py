"""The CFM stage's running batch: the chunk jobs of several requests solved together, one estimator call per Euler step.

Driven by the CFM worker (stages/cfm/worker.py: jobs join and leave between steps) and by
`run_flow_jobs` (the solo path of `CFMStream.push/finish`, a batch that runs its jobs to the
end). Pure tensor code: no sockets.

Each row is one request's flow call (stages/cfm/streaming.py `FlowJob`): its own window,
noise, prompt condition, speaker vector and step count, sitting at its own Euler step. The
encoder runs once per job when it joins, at the job's own length (no padding: `mu` is exactly
the solo value; the encoder is 2-7 % of a call, docs/cfm.md). The estimator then runs on all
rows at once, right-padded to one length with a padding mask:

- the estimator's convolutions are causal (a real frame reads only itself and earlier
  frames, never the padding on its right), its LayerNorms are per frame, and its attention
  masks padded keys, so a row's real frames do not depend on the padding or the other rows;
- the padded frames of x start at 0 and stay 0 (the velocity is multiplied by the mask);
- one row alone runs at its own length with an all-ones mask: exactly the solo call.

So a request's frames equal its solo result up to the rounding of batched matmuls (tested:
within 1e-5 relative), and a batch of one is bit-identical to `Flow.solve`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import torch

from stages.cfm.flow import Flow
from stages.cfm.solver import cfg_euler_step, cfg_pair, cosine_time_grid
from stages.common.lanes import BatchLimits, Shape


@dataclass
class _Row:
    key: Hashable
    job: Any  # a FlowJob
    grid: torch.Tensor  # [n_timesteps + 1] the row's time grid
    k: int = 0  # steps done

    @property
    def frames(self) -> int:
        return self.job.frames


class FlowBatch:
    """Rows of flow calls stepping together; `limits` bounds the rows and padded frames (None: unbounded)."""

    def __init__(self, flow: Flow, limits: BatchLimits | None = None):
        self.flow, self.limits = flow, limits
        self.rows: list[_Row] = []
        n = flow.cfg.n_mels
        dev, dt = flow.encoder_proj.weight.device, flow.encoder_proj.weight.dtype
        self.x = torch.zeros(0, n, 0, device=dev, dtype=dt)  # [B, 80, L] each row's sample at its current time
        self.mu = torch.zeros(0, n, 0, device=dev, dtype=dt)  # [B, 80, L]
        self.cond = torch.zeros(0, n, 0, device=dev, dtype=dt)  # [B, 80, L]
        self.spks = torch.zeros(0, n, device=dev, dtype=dt)  # [B, 80]
        self.mask = torch.zeros(0, 1, 0, device=dev, dtype=dt)  # [B, 1, L] 1 = real frame
        self._pair: tuple[torch.Tensor, ...] = ()  # the CFG-doubled estimator inputs, rebuilt when rows change

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: Hashable) -> bool:
        return any(r.key == key for r in self.rows)

    @property
    def length(self) -> int:
        """Frames every row is padded to (0 when empty)."""
        return self.x.size(-1)

    def shapes(self, extra: Sequence[int] = ()) -> list[Shape]:
        return [Shape(r.frames) for r in self.rows] + [Shape(f) for f in extra]

    def can_admit(self, frames: int) -> bool:
        """Whether a job of `frames` frames may join now (an empty batch takes any job)."""
        if not self.rows or self.limits is None:
            return True
        return self.limits.fits(self.shapes([frames])) is not None

    def _length_for(self, rows: Sequence[_Row]) -> int:
        if not rows:
            return 0
        if self.limits is None:
            return rows[0].frames if len(rows) == 1 else max(r.frames for r in rows)
        return self.limits.fits([Shape(r.frames) for r in rows]) or max(r.frames for r in rows)

    @staticmethod
    def _fit(t: torch.Tensor, length: int) -> torch.Tensor:
        """Right-pad with zeros or crop the last axis to `length`."""
        have = t.size(-1)
        if have == length:
            return t
        if have > length:
            return t[..., :length].contiguous()
        return torch.nn.functional.pad(t, (0, length - have))

    def _install(self, rows: list[_Row], x, mu, cond, spks, mask) -> None:
        length = self._length_for(rows)
        self.rows = rows
        self.x, self.mu, self.cond, self.mask = (self._fit(t, length) for t in (x, mu, cond, mask))
        self.spks = spks
        self._pair = cfg_pair(self.mu, self.spks, self.cond, self.mask)

    @torch.no_grad()
    def add(self, key: Hashable, job: Any) -> None:
        """Encode the job (at its own length) and add it as a row at step 0. Raises on bad tokens."""
        flow = self.flow
        dev, dt = self.x.device, self.x.dtype
        mu = flow.encode(job.tokens, finalize=job.finalize)  # [1, 80, F]
        if mu.size(-1) != job.frames:
            raise RuntimeError(f"flow encoder returned {mu.size(-1)} frames, the job needs {job.frames}")
        cond = torch.zeros_like(mu)  # [1, 80, F]: the prompt mel, then zeros
        k = job.prompt_cond.size(-1)
        cond[:, :, :k] = job.prompt_cond
        noise = job.noise.to(dev, dt)  # [1, 80, F]
        spks = job.spks.to(dev, dt)  # [1, 80]
        row = _Row(key, job, cosine_time_grid(job.n_timesteps, dt, dev))
        rows = [*self.rows, row]
        length = self._length_for(rows)

        def cat(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return torch.cat([self._fit(old, length), self._fit(new, length)])

        ones = torch.ones(1, 1, mu.size(-1), device=dev, dtype=dt)  # [1, 1, F]
        self._install(rows, cat(self.x, noise), cat(self.mu, mu), cat(self.cond, cond),
                      torch.cat([self.spks, spks]), cat(self.mask, ones))

    def drop(self, key: Hashable) -> None:
        """Remove the rows of `key` (a cancelled or failed request); the other rows carry on unchanged."""
        keep = [i for i, r in enumerate(self.rows) if r.key != key]
        if len(keep) == len(self.rows):
            return
        self._keep(keep)

    def _keep(self, keep: list[int]) -> None:
        idx = torch.tensor(keep, dtype=torch.long, device=self.x.device)
        self._install([self.rows[i] for i in keep], self.x[idx], self.mu[idx], self.cond[idx], self.spks[idx], self.mask[idx])

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, Any, torch.Tensor]]:
        """One Euler step of every row; returns (key, job, mel [1, 80, F]) of the rows that reached t = 1 (and removes them)."""
        if not self.rows:
            return []
        t = torch.stack([r.grid[r.k] for r in self.rows])  # [B]
        t_next = torch.stack([r.grid[r.k + 1] for r in self.rows])  # [B]
        mask2, mu2, spks2, cond2 = self._pair
        self.x = cfg_euler_step(self.flow.estimator, self.x, mask2, mu2, spks2, cond2, t, t_next, self.flow.cfg.cfg_rate)
        done = []
        for i, r in enumerate(self.rows):
            r.k += 1
            if r.k == r.job.n_timesteps:
                done.append((r.key, r.job, self.x[i : i + 1, :, : r.frames].clone()))
        if done:
            self._keep([i for i, r in enumerate(self.rows) if r.k < r.job.n_timesteps])
        return done


def run_flow_jobs(flow: Flow, jobs: Sequence[Any]) -> list[torch.Tensor]:
    """Solve these jobs together to the end (the solo path: one job = exactly one `Flow.solve`).  -> [1, 80, F] each"""
    batch = FlowBatch(flow)
    for i, job in enumerate(jobs):
        batch.add(i, job)
    out: dict[int, torch.Tensor] = {}
    while batch.rows:
        for key, _, mel in batch.step():
            out[key] = mel
    return [out[i] for i in range(len(jobs))]
