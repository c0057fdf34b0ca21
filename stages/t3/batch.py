"""The T3 tick: one batched decode forward per tick samples one token for every active request.

`T3Batch` owns a `TickModel`, the static KV cache, the voice-prefix cache and the active
requests, kept compact in slots 0..n-1. Between ticks it admits requests (`admit`: prefix KV
copied from the cache, one batched prefill of the texts, the first draw); each `tick` feeds
every active request's last draw through one forward over the first n*rows cache rows,
attending over the longest active position rounded up to a power of two, then draws the next
token of every request at once. Leaving requests (finished, failed, cancelled) free their slot
and the last slot is moved into the hole, so the batch stays compact.

Determinism: a request's k-th draw uses the uniform H(seed, k) (stages/t3/noise.py) and the
sampling chain is row-wise, so its tokens depend on its own inputs only; whether the *logits*
are bit-identical alone and in a batch depends on the kernels (see docs/t3.md, "Determinism").
One host sync per tick (and per admission): reading the drawn ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import torch

from stages.t3.kv_cache import KVCache
from stages.t3.noise import request_key, uniforms
from stages.t3.prefix_cache import DEFAULT_PREFIX_CACHE_SIZE, Prefix, PrefixCache
from stages.t3.sampling import RowParams, SamplingParams, sample
from stages.t3.tick_model import TickModel

# Default slot length: the prefill of ~300 text tokens plus the reference's 1000-token (40 s) cap.
# The full tables would need cond + 2050 + 2 + 4096 positions (2.9 GB fp32 per slot at chatterbox size).
DEFAULT_MAX_LEN = 1536
# A decode forward's matmuls run on at least this many rows (padding rows touch no cache).
# This CPU's sgemm takes another kernel for 1-3 rows, whose sums round differently from the one used
# for 4+ rows; padding keeps a request's logits bit-identical alone and in a batch (docs/t3.md).
# At `small` 4 rows cost what 2 do (the step is memory-bound).
MIN_DECODE_ROWS = 4
SPAN_MIN = 64  # the smallest attention span: spans are powers of two from here (few buckets to capture)
FINISH_STOP, FINISH_LENGTH = "stop", "length"


@dataclass(frozen=True)
class Admission:
    """A validated request, ready to take a slot."""

    rid: str
    text_ids: list[int]
    conds: Any  # the voice (T3Conditionals for the Llama T3)
    voice_key: Hashable  # the voice's cache key: the prefix cache keys on (voice_key, exaggeration)
    params: SamplingParams  # seed resolved
    max_new_tokens: int


@dataclass(frozen=True)
class Event:
    """What happened to one request in an admission or a tick (at most one token, then maybe an end)."""

    rid: str
    token: int | None = None  # a speech token handed out (< num_codes)
    finish: str | None = None  # "stop" / "length": done, left the batch
    error: str | None = None  # failed, left the batch


@dataclass
class _Active:
    rid: str
    params: SamplingParams
    max_new_tokens: int
    drawn: int = 0  # ids drawn so far (speech tokens and control ids)
    pos: int = 0  # cache position of the pending draw (= positions written so far)


class T3Batch:
    def __init__(self, model: TickModel, max_slots: int = 4, max_len: int = DEFAULT_MAX_LEN,
                 prefix_cache_size: int = DEFAULT_PREFIX_CACHE_SIZE, min_rows: int = MIN_DECODE_ROWS,
                 row_buckets: Sequence[int] | None = None):
        self.model, self.max_slots, self.max_len = model, max_slots, max_len
        self.rows = model.rows
        self.min_rows = min_rows
        self.row_buckets = tuple(sorted(row_buckets)) if row_buckets else None
        if self.row_buckets and self.row_buckets[-1] < max_slots * self.rows:
            raise ValueError(f"row_buckets {self.row_buckets} do not cover {max_slots} slots x {self.rows} rows")
        dev = self.device = model.device
        self.cache = KVCache(model.num_layers, model.kv_heads, model.head_dim, max_slots, self.rows, max_len,
                             dev, model.dtype)
        self.prefixes = PrefixCache(prefix_cache_size)
        s = max_slots
        self.tokens = torch.zeros(s, dtype=torch.long, device=dev)  # pending draw per slot (fed by the next tick)
        self.draws = torch.zeros(s, dtype=torch.long, device=dev)  # draws made per slot (the next draw's counter)
        self.pos = torch.zeros(s, dtype=torch.long, device=dev)  # cache position of the pending draw
        self.keys = torch.zeros(s, 2, dtype=torch.long, device=dev)  # per-request key words of the draws
        self.seen = torch.zeros(s, model.vocab_size, dtype=torch.bool, device=dev)  # repetition history
        # per-slot sampling parameters: the model's own store when its chain has other knobs (Turbo's top-k)
        new_params = getattr(model, "new_row_params", None)
        self.params = new_params(s) if new_params else RowParams(s, dev)
        # the reference's history rules: Llama keeps the BOS in the history; Turbo's first sample replaces it
        # and is not EOS-checked (optional TickModel flags, default the Llama behaviour)
        self._keep_start = getattr(model, "keep_history_start", True)
        self._eos_first = getattr(model, "eos_checks_first", True)
        self._history = torch.tensor(model.history_start, dtype=torch.long, device=dev)
        self._arange = torch.arange(max_len, device=dev)
        self.slots: list[_Active] = []  # slot i holds self.slots[i]; compact
        self._by_rid: dict[str, int] = {}
        self._gone: set[int] = set()  # slots freed by cancel, compacted at the next step
        self.logits: torch.Tensor | None = None  # [n, rows, V] of the last forward (tests read it)
        # The captured tick (stages/t3/graphs.py TickGraphs), attached on CUDA only: None = the eager tick.
        self.graphs: Any = None

    # --- capacity and validation (cheap, no model compute) ------------------------------
    @property
    def active(self) -> int:
        return len(self.slots) - len(self._gone)

    @property
    def free_slots(self) -> int:
        return self.max_slots - self.active

    def __contains__(self, rid: str) -> bool:
        return rid in self._by_rid

    def slot_of(self, rid: str) -> int | None:
        return self._by_rid.get(rid)

    def check(self, text_token_ids, conds, params: SamplingParams) -> tuple[list[int], int]:
        """Validate a request: (text ids, max_new_tokens). ValueError naming the field, before any compute."""
        ids = self.model.check_text(text_token_ids)
        used = self.model.prefix_len(conds) + self.model.text_len(len(ids))
        # the last draw is never fed back, so a request uses prefill + max_new - 1 positions
        limit = min(self.model.max_speech_tokens, self.max_len - used + 1)
        if limit < 1:
            raise ValueError(f"text_token_ids: {len(ids)} tokens leave no room in a KV-cache slot of max_len "
                             f"{self.max_len} (raise max_len or split the text)")
        params.validate(max_new_tokens_limit=limit)
        return ids, params.max_new_tokens or min(self.model.default_max_new_tokens(len(ids)), limit)

    # --- leaving -------------------------------------------------------------------------
    def cancel(self, rid: str) -> bool:
        """Free a request's slot now (compacted at the next step). False if it is not active."""
        slot = self._by_rid.pop(rid, None)
        if slot is None:
            return False
        self._gone.add(slot)
        return True

    def _leave(self, slots: list[tuple[int, bool]]) -> None:
        """Remove requests (slot, scrub) and keep the batch compact: the last slot moves into each hole."""
        for slot, scrub in sorted(slots, reverse=True):  # descending: the last slot is never one still to leave
            gone = self.slots[slot]
            if self._by_rid.get(gone.rid) == slot:
                del self._by_rid[gone.rid]
            if scrub:
                self.cache.scrub(slot)
            last = len(self.slots) - 1
            if slot != last:
                moved = self.slots[last]
                self.cache.move(last, slot, moved.pos)
                for t in (self.tokens, self.draws, self.pos, self.keys, self.seen):
                    t[slot] = t[last]
                self.params.move(last, slot)
                self.slots[slot] = moved
                if self._by_rid.get(moved.rid) == last:
                    self._by_rid[moved.rid] = slot
            self.slots.pop()

    def compact(self) -> None:
        if self._gone:
            gone, self._gone = self._gone, set()
            self._leave([(s, False) for s in gone])

    # --- admission -----------------------------------------------------------------------
    def prefill_rows(self, adm: Admission) -> int:
        """Rows x positions the admission prefill of a request computes (for an admission budget)."""
        return self.rows * self.model.text_len(len(adm.text_ids))

    def _prefix(self, adm: Admission) -> Prefix:
        exaggeration = float(getattr(adm.params, "exaggeration", 0.0))  # Turbo has no emotion input
        return self.prefixes.get((adm.voice_key, exaggeration), lambda: self.model.prefix(adm.conds, exaggeration))

    @torch.inference_mode()
    def admit(self, admissions: Sequence[Admission]) -> list[Event]:
        """Take slots for `admissions` (at most free_slots), prefill them together, draw their first tokens."""
        self.compact()
        if len(admissions) > self.free_slots:
            raise ValueError(f"{len(admissions)} admissions for {self.free_slots} free T3 slot(s)")
        events: list[Event] = []
        batch: list[tuple[Admission, Prefix]] = []
        for adm in admissions:
            if adm.rid in self._by_rid:
                raise ValueError(f"request id {adm.rid!r} is already active")
            try:
                batch.append((adm, self._prefix(adm)))
            except Exception as e:  # e.g. a voice whose tensors do not fit the model: this request only
                events.append(Event(adm.rid, error=f"voice prefix failed: {type(e).__name__}: {e}"))
        if not batch:
            return events
        first, k, r = len(self.slots), len(batch), self.rows
        for i, (adm, prefix) in enumerate(batch):
            slot = first + i
            self.cache.write_prefix(slot, prefix.k, prefix.v)
            self.params.set(slot, adm.params)
            self.keys[slot] = torch.tensor(request_key(adm.params.seed), device=self.device)
            self.draws[slot] = 0
            self.seen[slot] = False
            self.seen[slot, self._history] = True
            self.slots.append(_Active(adm.rid, adm.params, adm.max_new_tokens))
            self._by_rid[adm.rid] = slot
        try:
            logits = self._prefill(first, batch)
        except Exception as e:  # the batch's forward failed: each of its requests fails, the others carry on
            self._leave([(first + i, True) for i in range(k)])
            return events + [Event(adm.rid, error=f"T3 prefill failed: {type(e).__name__}: {e}") for adm, _ in batch]
        return events + self._draw(first, k, logits)

    def _prefill(self, first: int, batch: list[tuple[Admission, Prefix]]) -> torch.Tensor:
        r, k = self.rows, len(batch)
        texts = [self.model.text_inputs(adm.text_ids) for adm, _ in batch]  # each [R, t_i, D]
        lengths = [x.shape[1] for x in texts]
        t_max = max(lengths)
        x = torch.zeros(k * r, t_max, texts[0].shape[-1], device=self.device, dtype=texts[0].dtype)
        for i, xi in enumerate(texts):
            x[i * r:(i + 1) * r, :lengths[i]] = xi  # right padding: causal attention keeps it out of real rows
        starts = torch.tensor([p.length for _, p in batch], device=self.device).repeat_interleave(r)  # [kR]
        positions = (starts[:, None] + self._arange[:t_max]).clamp_max(self.max_len - 1)  # [kR, t_max]
        ends = [p.length + n for (_, p), n in zip(batch, lengths)]
        span = self._span(max(ends))
        visible = (self._arange[:span] <= positions[..., None]).unsqueeze(1)  # [kR, 1, t_max, span]
        kc, vc = self.cache.rows(first * r, k * r)
        h = self.model.forward(x, positions, visible, kc, vc)  # [kR, t_max, D]
        last = torch.tensor(lengths, device=self.device).repeat_interleave(r) - 1  # [kR]
        hidden = h[torch.arange(k * r, device=self.device), last]  # [kR, D]
        pad = self._decode_rows(k * r) - k * r  # the head's matmul on as many rows as a decode step
        if pad:
            hidden = torch.cat((hidden, hidden.new_zeros(pad, hidden.shape[-1])))
        logits = self.model.logits(hidden)[:k]  # [k, R, V]
        for i, end in enumerate(ends):
            self.slots[first + i].pos = end
            self.pos[first + i] = end
        return logits

    # --- the tick ------------------------------------------------------------------------
    def _span(self, length: int) -> int:
        """Attention span for `length` visible positions: the next power of two >= SPAN_MIN, at most max_len."""
        span = SPAN_MIN
        while span < length:
            span *= 2
        return min(span, self.max_len)

    def _decode_rows(self, rows: int) -> int:
        if self.row_buckets:
            return next(b for b in self.row_buckets if b >= rows)
        return max(rows, self.min_rows)

    @torch.inference_mode()
    def tick(self) -> list[Event]:
        """Feed every active request's pending draw through one forward and draw its next token."""
        self.compact()
        n = len(self.slots)
        if n == 0:
            return []
        span = self._span(max(a.pos for a in self.slots) + 1)
        if self.graphs is not None:  # replay the smallest captured bucket that fits (None: no bucket does)
            events = self.graphs.tick(n, span)
            if events is not None:
                return events
        r = self.rows
        rows, padded = n * r, self._decode_rows(n * r)
        x = self.model.step_inputs(self.tokens[:n], self.draws[:n] - 1)  # [nR, 1, D]
        positions = self.pos[:n].repeat_interleave(r).unsqueeze(1)  # [nR, 1]
        if padded > rows:  # padding rows: zero input at position 0, no cache, results unused
            x = torch.cat((x, x.new_zeros(padded - rows, 1, x.shape[-1])))
            positions = torch.cat((positions, positions.new_zeros(padded - rows, 1)))
        visible = (self._arange[:span] <= positions[..., None]).unsqueeze(1)  # [padded, 1, 1, span]
        kc, vc = self.cache.rows(0, rows)
        try:
            h = self.model.forward(x, positions, visible, kc, vc)  # [padded, 1, D]
            logits = self.model.logits(h[:, 0])[:n]  # [n, R, V]; the head too runs on the padded rows
        except Exception as e:  # the whole forward failed: every request in it fails, the batch empties
            events = [Event(a.rid, error=f"T3 decode failed: {type(e).__name__}: {e}") for a in self.slots]
            self._leave([(i, True) for i in range(n)])
            return events
        self.pos[:n] += 1
        for a in self.slots:
            a.pos += 1
        return self._draw(0, n, logits)

    def _draw(self, first: int, count: int, logits: torch.Tensor) -> list[Event]:
        """Draw one id for slots first..first+count-1 from their logits [count, R, V]; the one host sync."""
        self.logits = logits
        sl = slice(first, first + count)
        probs, finite = self.model.probs(logits, self.params.view(first, count), self.seen[sl])  # [count, V]
        drawn = sample(probs, uniforms(self.keys[sl], self.draws[sl]))  # [count]
        self.tokens[sl] = drawn
        if not self._keep_start:  # a row's first draw drops the history's start ids
            self.seen[sl] &= (self.draws[sl] > 0)[:, None]
        self.seen[torch.arange(first, first + count, device=self.device), drawn] = True
        self.draws[sl] += 1
        ids = torch.where(finite, drawn, -1).tolist()  # the host sync: -1 flags non-finite logits
        return self._drawn(first, ids)

    def _drawn(self, first: int, ids: list[int]) -> list[Event]:
        """Host side of a draw: ids (-1 = non-finite logits) of slots first.. -> events; finished requests leave."""
        events: list[Event] = []
        leaving: list[tuple[int, bool]] = []
        for i, tok in enumerate(ids):
            slot, a = first + i, self.slots[first + i]
            if tok < 0:
                events.append(Event(a.rid, error=f"non-finite T3 logits at step {a.drawn}"))
                leaving.append((slot, True))
                continue
            a.drawn += 1
            if tok == self.model.stop_token and not a.params.ignore_eos and (self._eos_first or a.drawn > 1):
                events.append(Event(a.rid, finish=FINISH_STOP))
                leaving.append((slot, False))
                continue
            if tok < self.model.num_codes:
                events.append(Event(a.rid, token=tok))
            if a.drawn >= a.max_new_tokens:
                events.append(Event(a.rid, finish=FINISH_LENGTH))
                leaving.append((slot, False))
        self._leave(leaving)
        return events
