"""The T3 tick captured as CUDA graphs: one graph per (batch-size bucket, attention span), replayed per tick.

An eager decode tick at full size is ~400 small kernel launches (30 layers of norms, projections,
RoPE, attention, MLP, then the head and the sampling chain); on a GPU their launch overhead, not
their arithmetic, sets the tick's time. `TickGraphs` records the whole tick once per shape and
replays it: the decode forward over the static KV cache (stages/t3/kv_cache.py), the head, the
sampling chain with its counter-based draws (stages/t3/noise.py: no generator, no host state), and
the updates of the tick's per-slot state (pending token, draw counter, cache position, repetition
history). The one host sync per tick stays: reading the drawn ids.

Shapes. A graph is captured for B requests (a bucket: 1, 2, 4, ..., 64, up to the batch's
max_slots, which is always one) and an attention span (the tick's own spans: powers of two from
SPAN_MIN, at most max_len). A tick of n active requests whose longest position needs span S
replays the graph of the smallest bucket B >= n at span S. Slots n .. B-1 are free slots: the
graph computes them as padding rows (token 0 at cache position 0 of their own, free, cache rows,
which an admission overwrites with the voice prefix before anything reads them) and masks them
out of every state update, so the active requests' state evolves exactly as in the eager tick.

Generic over `TickModel` (stages/t3/tick_model.py): the graph calls only `step_inputs`, `forward`,
`logits` and `probs`, so any model family whose four calls make no host sync can be captured
(Chatterbox's Llama T3; the Turbo tick too). If a capture fails, the batch keeps the eager tick
and the failure is logged.

Sampling inside the graph runs every processor of the chain for every row (a captured graph cannot
skip one by a host flag): each processor is the identity for a row that does not use it (penalty 1,
min-p 0, top-p 1, no ignore_eos) bit for bit, so the tokens equal the eager tick's, which skips it.

`capture=False` runs the same padded-bucket step eagerly (what CPU tests use to check the bucket
selection and the padding against the plain tick; on CUDA it is the uncaptured reference of the
`gpu` tests).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from stages.t3.batch import SPAN_MIN, Event, T3Batch
from stages.t3.noise import uniforms
from stages.t3.sampling import ROW_FIELDS, SamplingRows, sample

# Batch-size buckets (requests per tick): powers of two up to 64 (the largest concurrency the GPU
# benchmark targets); a batch whose max_slots lies between two gets max_slots itself as its top bucket.
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
log = logging.getLogger("tts.t3")


def bucket_sizes(max_slots: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple[int, ...]:
    """The buckets a batch of max_slots captures: those below max_slots, then max_slots (so every n fits)."""
    if max_slots < 1:
        raise ValueError(f"max_slots must be >= 1, got {max_slots}")
    if any(int(b) < 1 for b in buckets):
        raise ValueError(f"buckets must be positive request counts, got {tuple(buckets)}")
    return tuple(sorted({int(b) for b in buckets if b < max_slots} | {max_slots}))


def span_sizes(max_len: int, span_min: int = SPAN_MIN) -> tuple[int, ...]:
    """Every span the tick can ask for (T3Batch._span): span_min * 2^k below max_len, then max_len."""
    spans, s = [], span_min
    while s < max_len:
        spans.append(s)
        s *= 2
    return tuple(spans) + (max_len,)


def pick_bucket(n: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket holding n requests (None: none does)."""
    return next((b for b in sorted(buckets) if b >= n), None)


@dataclass
class _Captured:
    graph: object | None  # torch.cuda.CUDAGraph (None: run the step eagerly)
    ids: torch.Tensor  # [B] drawn id per slot, -1 where the logits were not finite
    logits: torch.Tensor  # [B, rows, V] fp32


class TickGraphs:
    """Captured ticks of one `T3Batch` (attach with `attach_tick_graphs`; capture while the batch is idle)."""

    def __init__(self, batch: T3Batch, buckets: Sequence[int] = DEFAULT_BUCKETS, spans: Sequence[int] | None = None,
                 capture: bool = True):
        self.batch, self.model = batch, batch.model
        self.buckets = bucket_sizes(batch.max_slots, buckets)
        self.spans = tuple(spans) if spans is not None else span_sizes(batch.max_len)
        bad = [s for s in self.spans if s not in span_sizes(batch.max_len)]
        if bad:
            raise ValueError(f"spans {bad} are not spans the tick asks for ({span_sizes(batch.max_len)})")
        self.capture = capture
        dev = batch.device
        self.n = torch.zeros((), dtype=torch.long, device=dev)  # active requests of this tick (a graph input)
        self._slot_ids = torch.arange(batch.max_slots, device=dev)
        self.steps: dict[tuple[int, int], _Captured] = {}
        self.capture_s = 0.0  # start-up seconds spent capturing (warm-up runs included)
        self.replays: dict[tuple[int, int], int] = {}  # (bucket, span) -> ticks served (tests, benchmarks)
        self._pool = None

    # --- the step every graph records --------------------------------------------------------
    def _sampling_rows(self, b: int) -> SamplingRows:
        p = self.batch.params
        return SamplingRows(**{name: p.values[name][:b, None] for name in ROW_FIELDS}, ignore_eos=p.ignore_eos[:b, None],
                            any_min_p=True, any_top_p=True, any_penalty=True, any_ignore_eos=True)

    def _step(self, b: int, span: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One tick of slots 0..b-1, the first self.n of them real -> (ids [b], logits [b, rows, V])."""
        bt, m, r = self.batch, self.model, self.model.rows
        valid = self._slot_ids[:b] < self.n  # [b] bool: real slots
        tokens = torch.where(valid, bt.tokens[:b], 0)
        index = torch.where(valid, bt.draws[:b] - 1, 0)
        pos = torch.where(valid, bt.pos[:b], 0)  # padding slots: cache position 0 of their own (free) rows
        x = m.step_inputs(tokens, index)  # [b*r, 1, D]
        positions = pos[:, None].expand(b, r).reshape(b * r, 1)  # [b*r, 1]: each slot's position on its rows
        padded = bt._decode_rows(b * r)  # the eager tick's row padding (MIN_DECODE_ROWS / row_buckets)
        if padded > b * r:
            x = torch.cat((x, x.new_zeros(padded - b * r, 1, x.shape[-1])))
            positions = torch.cat((positions, positions.new_zeros(padded - b * r, 1)))
        visible = (bt._arange[:span] <= positions[..., None]).unsqueeze(1)  # [padded, 1, 1, span]
        kc, vc = bt.cache.rows(0, b * r)
        h = m.forward(x, positions, visible, kc, vc)  # [padded, 1, D]
        logits = m.logits(h[:, 0])[:b]  # [b, r, V] fp32
        probs, finite = m.probs(logits, self._sampling_rows(b), bt.seen[:b])  # [b, V], [b]
        drawn = sample(probs, uniforms(bt.keys[:b], bt.draws[:b]))  # [b]
        # state updates of the real slots only (the eager tick's pos += 1, then _draw's)
        bt.tokens[:b] = torch.where(valid, drawn, bt.tokens[:b])
        seen = bt.seen[:b]
        seen.scatter_(1, drawn[:, None], seen.gather(1, drawn[:, None]) | valid[:, None])
        step = valid.long()
        bt.draws[:b] += step
        bt.pos[:b] += step
        return torch.where(finite, drawn, -1), logits

    # --- capture -------------------------------------------------------------------------------
    @torch.inference_mode()
    def capture_all(self) -> None:
        """Record every (bucket, span), largest first (they share one memory pool). The batch must be idle."""
        if self.batch.slots:
            raise RuntimeError("capture the T3 tick graphs while the batch is idle")
        t0 = time.perf_counter()
        self.n.fill_(0)  # no real slot during capture: the state is left as it is
        for b in sorted(self.buckets, reverse=True):
            for span in sorted(self.spans, reverse=True):
                self.steps[(b, span)] = self._record(b, span)
        if self.capture:
            torch.cuda.synchronize(self.batch.device)
        self.capture_s = time.perf_counter() - t0

    def _record(self, b: int, span: int) -> _Captured:
        if not self.capture:
            return _Captured(None, torch.empty(0), torch.empty(0))
        side = torch.cuda.Stream(self.batch.device)
        side.wait_stream(torch.cuda.current_stream(self.batch.device))
        with torch.cuda.stream(side):  # warm-up runs: library handles, autotuning, lazy buffers
            for _ in range(2):
                self._step(b, span)
        torch.cuda.current_stream(self.batch.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            ids, logits = self._step(b, span)
        self._pool = graph.pool()
        return _Captured(graph, ids, logits)

    # --- the tick ------------------------------------------------------------------------------
    def tick(self, n: int, span: int) -> list[Event] | None:
        """Serve T3Batch.tick for n compact active slots at `span` (None: no bucket fits; the eager tick runs)."""
        b = pick_bucket(n, self.buckets)
        if b is None or (b, span) not in self.steps:
            return None
        bt = self.batch
        self.n.fill_(n)
        try:
            cap = self.steps[(b, span)]
            if cap.graph is None:
                ids, logits = self._step(b, span)
            else:
                cap.graph.replay()
                ids, logits = cap.ids, cap.logits
            drawn = ids[:n].tolist()  # the one host sync of the tick
        except Exception as e:  # as the eager tick: the whole forward failed, every request in it fails
            events = [Event(a.rid, error=f"T3 decode failed: {type(e).__name__}: {e}") for a in bt.slots]
            bt._leave([(i, True) for i in range(n)])
            return events
        self.replays[(b, span)] = self.replays.get((b, span), 0) + 1
        for a in bt.slots:
            a.pos += 1
        bt.logits = logits[:n]  # a view of the graph's output: valid until the next tick
        return bt._drawn(0, drawn)


def graphs_wanted(device: torch.device | str, enabled: bool | None = None) -> bool:
    """Captured ticks run on CUDA only: `enabled` None = on for a CUDA device; True on a CPU is refused."""
    is_cuda = torch.device(device).type == "cuda"
    if enabled and not is_cuda:
        raise ValueError(f"cuda_graphs needs a CUDA device, the T3 stage runs on {device}")
    return is_cuda if enabled is None else bool(enabled)


def attach_tick_graphs(batch: T3Batch, buckets: Sequence[int] = DEFAULT_BUCKETS, spans: Sequence[int] | None = None,
                       capture: bool = True) -> TickGraphs | None:
    """Capture the tick's graphs and make `batch.tick` replay them. None (eager tick kept) if a capture fails."""
    graphs = TickGraphs(batch, buckets, spans, capture)
    try:
        graphs.capture_all()
    except Exception as e:  # a TickModel whose calls cannot be captured (a host sync): keep the eager tick
        log.warning("T3 tick graphs not captured (eager tick kept): %s: %s", type(e).__name__, e)
        return None
    batch.graphs = graphs
    log.info("T3 tick graphs: buckets %s x spans %s captured in %.2f s", graphs.buckets, graphs.spans, graphs.capture_s)
    return graphs
