"""The flow's solver step captured as CUDA graphs over (rows, frames) buckets, for the CFM stage's running batch.

One Euler step of the flow is one estimator call (a 1-D U-Net with transformer blocks: a few
hundred kernels at full size, on the CFG pair of 2B rows) plus the update; a chunk takes 10 of
them. On a GPU the launches, not the arithmetic, set that time, so `FlowGraphs` records the step
(`Flow.step_inputs` + `Flow.step`: the cosine Euler with CFG, or Turbo's meanflow step, whichever
flow it is given) once per shape and replays it:

- rows: 1, 2, 4, 8, 16 (the running batch's `FLOW_LIMITS.max_jobs`);
- frames: the stage's padding buckets (stages/common/lanes.py `bucket`, step 16: 16, 32, ..., 128,
  160, 192, 224, 256, 320, ..., 512), which cover a window of prompt (100 frames at the default 50
  prompt tokens) + left context + chunk + lookahead;
- only pairs a batch can reach: B rows x L frames within the stage's `max_units` for the smallest
  batch that needs bucket B (a row alone takes every length).

All of them are captured at start-up (no capture, compile or recompile while serving). A step whose
rows or frames fit no captured shape runs eagerly, as before.

Padding: a real row's frames past its own length get mask 0 (the running batch's own padded
step: causal convolutions, per-frame norms, masked attention keys and a masked output keep its
frames independent of the padding), rows past the batch get mask 1, zero inputs and dt = 0.
So a row's frames equal its padded eager step within rounding (tested on CPU with `capture=False`,
the same padded step run eagerly), and its solo call within 1e-5 relative in fp32 (the `gpu` tests).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from stages.common.lanes import BatchLimits, bucket

ROW_BUCKETS = (1, 2, 4, 8, 16)  # rows per step; 16 = FLOW_LIMITS.max_jobs
MAX_FRAMES = 512  # the longest captured window: prompt 100 + context 64 + hop 64 + lookahead, with room for 'all' prompts
log = logging.getLogger("tts.cfm")


def length_buckets(limits: BatchLimits, max_frames: int = MAX_FRAMES) -> tuple[int, ...]:
    """Every padded length the stage's bucketing produces up to max_frames."""
    return tuple(sorted({bucket(n, limits.bucket_step) for n in range(1, max_frames + 1)}))


def reachable(rows: int, frames: int, row_buckets: Sequence[int], limits: BatchLimits) -> bool:
    """Whether a batch can need (rows bucket, frames): its smallest batch (previous bucket + 1 rows) fits max_units."""
    smaller = [b for b in row_buckets if b < rows]
    least = (max(smaller) + 1) if smaller else 1
    return least == 1 or least * frames <= limits.max_units


def pick(n: int, buckets: Sequence[int]) -> int | None:
    return next((b for b in sorted(buckets) if b >= n), None)


@dataclass
class _Shape:
    graph: object | None  # torch.cuda.CUDAGraph, or None: the padded step runs eagerly (CPU tests)
    x: torch.Tensor  # [B, 80, L] static inputs ...
    mu: torch.Tensor  # [B, 80, L]
    cond: torch.Tensor  # [B, 80, L]
    spks: torch.Tensor  # [B, 80]
    mask: torch.Tensor  # [B, 1, L]
    t: torch.Tensor  # [B]
    t_next: torch.Tensor  # [B]
    out: torch.Tensor | None = None  # [B, 80, L] the captured step's output
    rows: tuple = ()  # the rows (FlowBatch `_Row`s, one per job) whose mu/cond/spks/mask are loaded


class FlowGraphs:
    """Captured solver steps of one flow (attach to a FlowBatch with `attach_flow_graphs`)."""

    def __init__(self, flow, limits: BatchLimits, row_buckets: Sequence[int] = ROW_BUCKETS,
                 frames: Sequence[int] | None = None, capture: bool = True):
        self.flow, self.limits, self.capture = flow, limits, capture
        self.row_buckets = tuple(sorted(b for b in row_buckets if b <= limits.max_jobs)) or (1,)
        self.frames = tuple(sorted(frames)) if frames is not None else length_buckets(limits)
        w = flow.encoder_proj.weight
        self.device, self.dtype, self.n_mels = w.device, w.dtype, flow.cfg.n_mels
        self.shapes: dict[tuple[int, int], _Shape] = {}
        self.capture_s = 0.0
        self.replays: dict[tuple[int, int], int] = {}
        self._pool = None

    def pairs(self) -> list[tuple[int, int]]:
        return [(b, f) for b in self.row_buckets for f in self.frames if reachable(b, f, self.row_buckets, self.limits)]

    def _buffers(self, b: int, f: int) -> _Shape:
        z = dict(device=self.device, dtype=self.dtype)
        n = self.n_mels
        return _Shape(None, torch.zeros(b, n, f, **z), torch.zeros(b, n, f, **z), torch.zeros(b, n, f, **z),
                      torch.zeros(b, n, **z), torch.ones(b, 1, f, **z), torch.zeros(b, **z), torch.zeros(b, **z))

    def _step(self, s: _Shape) -> torch.Tensor:
        inputs = self.flow.step_inputs(s.mu, s.spks, s.cond, s.mask)
        return self.flow.step(s.x, inputs, s.t, s.t_next)  # [B, 80, L]

    @torch.no_grad()
    def capture_all(self) -> None:
        """Allocate (and on CUDA record) every reachable shape, largest first (one shared memory pool)."""
        t0 = time.perf_counter()
        for b, f in sorted(self.pairs(), key=lambda p: p[0] * p[1], reverse=True):
            s = self._buffers(b, f)
            if self.capture:
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):  # warm-up: cuDNN / cuBLAS plans, lazy workspaces
                    for _ in range(2):
                        self._step(s)
                torch.cuda.current_stream(self.device).wait_stream(side)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=self._pool):
                    s.out = self._step(s)
                self._pool, s.graph = g.pool(), g
            self.shapes[(b, f)] = s
        if self.capture:
            torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - t0

    @torch.no_grad()
    def step(self, rows: Sequence) -> list[torch.Tensor] | None:
        """One solver step of the running batch's rows (each: key, x [1, 80, F], mu, cond, spks, grid, k)
        -> each row's x at its next time [1, 80, F]; None if no captured shape fits (the eager step runs)."""
        b = pick(len(rows), self.row_buckets)
        f = pick(max(r.frames for r in rows), self.frames)
        if b is None or f is None or (b, f) not in self.shapes:
            return None
        s = self.shapes[(b, f)]
        if len(s.rows) != len(rows) or any(a is not r for a, r in zip(s.rows, rows)):  # the rows changed: load their step inputs (padding frames: mask 0; padding rows: mask 1)
            for t in (s.mu, s.cond, s.spks):
                t.zero_()
            s.mask.fill_(1)
            for i, r in enumerate(rows):
                s.mu[i, :, : r.frames] = r.mu[0]
                s.cond[i, :, : r.frames] = r.cond[0]
                s.spks[i] = r.spks[0]
                s.mask[i, :, r.frames:] = 0
            s.rows = tuple(rows)
        s.x.zero_()
        s.t.zero_()
        s.t_next.zero_()
        for i, r in enumerate(rows):
            s.x[i, :, : r.frames] = r.x[0]
            s.t[i] = r.grid[r.k]
            s.t_next[i] = r.grid[r.k + 1]
        if s.graph is not None:
            s.graph.replay()
            out = s.out
        else:
            out = self._step(s)
        self.replays[(b, f)] = self.replays.get((b, f), 0) + 1
        return [out[i : i + 1, :, : r.frames].clone() for i, r in enumerate(rows)]  # clone: the buffer is reused


def flow_graphs_wanted(device: torch.device | str, enabled: bool | None = None) -> bool:
    """Captured flow steps run on CUDA only: None = on for a CUDA device; True on a CPU is refused."""
    is_cuda = torch.device(device).type == "cuda"
    if enabled and not is_cuda:
        raise ValueError(f"cuda_graphs needs a CUDA device, the CFM stage runs on {device}")
    return is_cuda if enabled is None else bool(enabled)


def attach_flow_graphs(batch, row_buckets: Sequence[int] = ROW_BUCKETS, frames: Sequence[int] | None = None,
                       capture: bool = True) -> FlowGraphs | None:
    """Capture the flow step for a FlowBatch (stages/cfm/batch.py) and make its steps replay them.
    None (eager steps kept) if a capture fails."""
    graphs = FlowGraphs(batch.flow, batch.limits, row_buckets, frames, capture)
    try:
        graphs.capture_all()
    except Exception as e:
        log.warning("flow step graphs not captured (eager steps kept): %s: %s", type(e).__name__, e)
        return None
    batch.graphs = graphs
    log.info("flow step graphs: %d shapes (rows %s, frames %s..%s) captured in %.2f s", len(graphs.shapes),
             graphs.row_buckets, graphs.frames[0], graphs.frames[-1], graphs.capture_s)
    return graphs
