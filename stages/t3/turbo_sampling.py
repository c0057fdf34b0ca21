"""Chatterbox Turbo's sampling chain as tensor ops over rows [B, V], with per-row parameters.

Order per step (reference `T3.inference_turbo`): temperature -> top-k -> top-p -> repetition
penalty -> softmax -> sample. The penalty therefore acts on temperature-scaled logits *after*
the filters: it re-weights kept ids only (-inf stays -inf). History: {BOS 6561} for the first
sample (taken from the prefill), afterwards every id sampled so far (BOS not included).

Everything is a pure function of tensors: no Python branching on values, no host sync, one
set of parameters per row, so rows of different requests can be sampled in one vectorised call
(the batched T3 tick). The caller reads `tokens` and `status` once per tick.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

# The reference's loop: one sample from the prefill, then up to max_gen_len = 1000 cached steps.
TURBO_MAX_GEN_LEN = 1000
TURBO_MAX_SAMPLES = 1 + TURBO_MAX_GEN_LEN

# Row status after a step.
ROW_OK = 0  # a token was sampled
ROW_EXHAUSTED = 1  # every processed logit was -inf: the reference breaks before sampling (a stop)
ROW_NON_FINITE = 2  # NaN/+inf logits (or nothing left to sample from the prefill): the request fails

EXP_FLOOR = 1e-20  # floor of the exponential race's divisor (an exact 0 would give 0/0)


@dataclass(frozen=True)
class TurboSamplingParams:
    temperature: float = 0.8
    top_k: int = 1000  # 0 = off
    top_p: float = 0.95  # 1.0 = off
    repetition_penalty: float = 1.2  # 1.0 = off
    max_new_tokens: int | None = None  # samples (EOS included); None = 1001, the reference's cap
    ignore_eos: bool = False  # ids >= 6561 masked out: exactly max_new_tokens valid tokens (benchmarks)
    seed: int | None = None  # None = a fresh random seed per request

    def validate(self, max_new_tokens_limit: int | None = None) -> "TurboSamplingParams":
        """Raise ValueError naming the first bad field; returns self for chaining."""
        def real(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            return float(v)

        if not real("temperature") > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0 < real("top_p") <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not real("repetition_penalty") > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        m = self.max_new_tokens
        if m is not None:
            if isinstance(m, bool) or not isinstance(m, int) or m < 1:
                raise ValueError(f"max_new_tokens must be a positive integer or None, got {m!r}")
            if max_new_tokens_limit is not None and m > max_new_tokens_limit:
                raise ValueError(f"max_new_tokens {m} exceeds the limit {max_new_tokens_limit} "
                                 "(the reference's 1001 samples / KV-cache length)")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be a bool, got {self.ignore_eos!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be None or an integer in [0, 2**63), got {self.seed!r}")
        return self

    def resolved_seed(self) -> int:
        return self.seed if self.seed is not None else secrets.randbits(63)


class RowParams:
    """Per-row sampling parameters as device tensors [B] (a batched tick keeps one table per slot).

    top_p's drop threshold is 1 - top_p computed in float64 and rounded to float32 once, which is
    what the reference's float32 comparison with the Python float 1 - top_p amounts to.
    """

    def __init__(self, n_rows: int, device: torch.device | str = "cpu"):
        self.temperature = torch.ones(n_rows, device=device)
        self.top_k = torch.zeros(n_rows, dtype=torch.long, device=device)
        self.top_p_drop = torch.zeros(n_rows, device=device)
        self.top_p_on = torch.zeros(n_rows, dtype=torch.bool, device=device)
        self.penalty = torch.ones(n_rows, device=device)
        self.ban_control = torch.zeros(n_rows, dtype=torch.bool, device=device)

    @classmethod
    def from_params(cls, params: Sequence[TurboSamplingParams], device: torch.device | str = "cpu") -> "RowParams":
        rows = cls(len(params), device)
        for i, p in enumerate(params):
            rows.assign(i, p)
        return rows

    def set(self, row: int, p: TurboSamplingParams) -> None:
        """The tick's per-slot store interface (stages/t3/batch.py): `assign`."""
        self.assign(row, p)

    def move(self, src: int, dst: int) -> None:
        """Copy row src into row dst (the tick's compaction)."""
        for t in self._tables():
            t[dst] = t[src]

    def view(self, first: int, count: int) -> "RowParams":
        """Rows first .. first+count-1 as a RowParams of views (no copy)."""
        out = RowParams.__new__(RowParams)
        for name, t in zip(self.FIELDS, self._tables()):
            setattr(out, name, t[first:first + count])
        return out

    FIELDS = ("temperature", "top_k", "top_p_drop", "top_p_on", "penalty", "ban_control")

    def _tables(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.FIELDS]

    def assign(self, row: int, p: TurboSamplingParams) -> None:
        """Set one row (when a request takes its slot; a few tiny host-to-device writes)."""
        self.temperature[row] = float(p.temperature)
        self.top_k[row] = int(p.top_k)
        self.top_p_drop[row] = 1.0 - float(p.top_p)
        self.top_p_on[row] = p.top_p < 1.0
        self.penalty[row] = float(p.repetition_penalty)
        self.ban_control[row] = bool(p.ignore_eos)


# --- the chain, one function per processor (each [B, V] -> [B, V]) -------------------------------
def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """logits / temperature per row (temperature [B])."""
    return logits / temperature[:, None]


def top_k_rows(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep every id >= the row's k-th largest logit (ties survive); top_k [B] long, 0 = off."""
    k = top_k.clamp(1, logits.shape[-1])
    kth = logits.sort(dim=-1, descending=True).values.gather(-1, (k - 1)[:, None])  # [B, 1]
    return logits.masked_fill((logits < kth) & (top_k > 0)[:, None], float("-inf"))


def top_p_rows(logits: torch.Tensor, drop: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """Nucleus filter per row: drop the least likely ids whose cumulative probability is <= drop[b]
    (= 1 - top_p); the most likely id is always kept; rows with on[b] False are untouched."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)  # ascending, as the reference
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [B, V]
    remove_sorted = cum <= drop[:, None]
    remove_sorted[:, -1] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove & on[:, None], float("-inf"))


def repetition_penalty_rows(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Each id in the row's history (seen [B, V] bool) once: negative logits x p, others / p."""
    p = penalty[:, None]
    return torch.where(seen, torch.where(logits < 0, logits * p, logits / p), logits)


def process_logits(logits: torch.Tensor, rows: RowParams, seen: torch.Tensor) -> torch.Tensor:
    """The reference's LogitsProcessorList on rows: temperature -> top-k -> top-p -> penalty."""
    x = apply_temperature(logits, rows.temperature)
    x = top_k_rows(x, rows.top_k)
    x = top_p_rows(x, rows.top_p_drop, rows.top_p_on)
    return repetition_penalty_rows(x, seen, rows.penalty)


class TurboStep(NamedTuple):
    tokens: torch.Tensor  # [B] long, always a valid index (meaningful where status == ROW_OK)
    status: torch.Tensor  # [B] long: ROW_OK, ROW_EXHAUSTED or ROW_NON_FINITE
    probs: torch.Tensor  # [B, V] float32, what was sampled from


def next_tokens(logits: torch.Tensor, rows: RowParams, seen: torch.Tensor, first: torch.Tensor,
                noise: torch.Tensor, control: torch.Tensor) -> TurboStep:
    """One sampling step for every row.

    logits [B, V] raw speech-head output; seen [B, V] bool history; first [B] bool (this row's
    first sample, from the prefill: the reference neither EOS-checks nor -inf-checks it); noise
    [B, V] Exp(1) draws (`exponential_noise`); control [V] bool ids that ignore_eos rows may never
    sample (>= 6561).
    """
    raw = logits.float()
    non_finite = (torch.isnan(raw) | torch.isposinf(raw)).any(dim=-1)  # [B]
    raw = raw.masked_fill(rows.ban_control[:, None] & control[None, :], float("-inf"))
    processed = process_logits(raw, rows, seen)
    exhausted = (processed == float("-inf")).all(dim=-1)  # [B]
    probs = torch.softmax(processed, dim=-1)
    tokens = torch.argmax(probs / noise.clamp_min(EXP_FLOOR), dim=-1)  # exponential race: P(i) = p_i
    failed = non_finite | (exhausted & first)  # the prefill's sample has no break: all -inf is a failure
    status = torch.where(failed, ROW_NON_FINITE, torch.where(exhausted, ROW_EXHAUSTED, ROW_OK))
    return TurboStep(tokens, status, probs)


def reset_history(seen: torch.Tensor, row: int, start_token: int) -> None:
    """A row's history when its request starts: {BOS}."""
    seen[row].zero_()
    seen[row, start_token] = True


def record_samples(seen: torch.Tensor, tokens: torch.Tensor, first: torch.Tensor) -> None:
    """Add this step's samples to the history; a row's first sample replaces the BOS."""
    seen.masked_fill_(first[:, None], False)
    seen.scatter_(1, tokens[:, None], True)


def exponential_noise(generators: Sequence[torch.Generator], vocab: int, device) -> torch.Tensor:
    """[B, V] Exp(1) draws, row b from generators[b] (so a row's stream does not depend on its batch)."""
    return torch.stack([torch.empty(vocab, device=device).exponential_(generator=g) for g in generators])
