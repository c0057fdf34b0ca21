"""Per-request sampling parameters and the logits -> probabilities chain of the reference, vectorised over rows.

Order per step (reference `T3.inference` with Chatterbox's `generate()` defaults):
CFG combine -> repetition penalty -> / temperature -> min-p -> top-p -> softmax -> sample.
Every processor works on a batch of requests at once ([B, V] logits) with per-row parameters
(`SamplingRows`, [B, 1] tensors) and is row-wise: a row's result never depends on the other
rows. Everything runs on the device without host synchronisation; the tick fetches the ids.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Sequence

import torch

# Default cap on new speech tokens when the request sets none: speech runs at 25 tokens/s and
# English BPE text averages well under one text token per 0.8 s of speech, so 20 speech tokens
# per text token plus a floor of 50 (2 s) covers normal speech; 1000 (40 s) is the reference's cap.
DEFAULT_TOKENS_PER_TEXT_TOKEN = 20
DEFAULT_MIN_NEW_TOKENS = 50
DEFAULT_MAX_NEW_TOKENS = 1000
# Upper bounds of the conditioning scalars: the reference's UI goes to 1 (cfg_weight) and 2
# (exaggeration); 100 leaves room to experiment while the logits and the emotion projection stay
# finite in float16/bfloat16 (1e308 overflowed to inf and failed deep in the model, naming nothing).
MAX_CFG_WEIGHT = 100.0
MAX_EXAGGERATION = 100.0


def default_max_new_tokens(n_text_tokens: int) -> int:
    """min(1000, 50 + 20 * n_text_tokens) for n unpadded text tokens."""
    return min(DEFAULT_MAX_NEW_TOKENS, DEFAULT_MIN_NEW_TOKENS + DEFAULT_TOKENS_PER_TEXT_TOKEN * n_text_tokens)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    cfg_weight: float = 0.5  # logits = cond + w * (cond - uncond); 0 = no guidance
    exaggeration: float = 0.5  # emotion_adv conditioning scalar (overrides the stored voice's value)
    min_p: float = 0.05
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.2  # 1.0 = off
    max_new_tokens: int | None = None  # None = default_max_new_tokens(text length)
    ignore_eos: bool = False  # generate exactly max_new_tokens valid tokens (stop/control ids masked)
    seed: int | None = None  # None = a fresh random seed per request

    def validate(self, max_new_tokens_limit: int | None = None) -> "SamplingParams":
        """Raise ValueError naming the first bad field; returns self for chaining."""
        def real(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            return float(v)

        if not real("temperature") > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0 <= real("cfg_weight") <= MAX_CFG_WEIGHT:
            raise ValueError(f"cfg_weight must be in [0, {MAX_CFG_WEIGHT:g}], got {self.cfg_weight!r}")
        if not 0 <= real("exaggeration") <= MAX_EXAGGERATION:
            raise ValueError(f"exaggeration must be in [0, {MAX_EXAGGERATION:g}], got {self.exaggeration!r}")
        if not 0 <= real("min_p") < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p!r}")
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
                                 "(speech position table / KV-cache length)")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be a bool, got {self.ignore_eos!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be None or an integer in [0, 2**63), got {self.seed!r}")
        return self

    def resolved_seed(self) -> int:
        return self.seed if self.seed is not None else secrets.randbits(63)


# Per-row parameters the chains read, each stored as a float tensor (ignore_eos as bool).
ROW_FIELDS = ("temperature", "cfg_weight", "min_p", "top_p", "repetition_penalty")


@dataclass(frozen=True)
class SamplingRows:
    """The sampling parameters of B rows (requests) as [B, 1] tensors, plus host-side flags that let a
    chain skip a processor no row uses (the flags come from the host copy: no device sync)."""

    temperature: torch.Tensor
    cfg_weight: torch.Tensor
    min_p: torch.Tensor
    top_p: torch.Tensor
    repetition_penalty: torch.Tensor
    ignore_eos: torch.Tensor  # [B, 1] bool
    any_min_p: bool = True
    any_top_p: bool = True
    any_penalty: bool = True
    any_ignore_eos: bool = True

    @classmethod
    def from_params(cls, params: Sequence[SamplingParams], device=None) -> "SamplingRows":
        """Rows for a list of requests (tests and one-off use; the tick keeps a `RowParams` store)."""
        store = RowParams(len(params), device)
        for i, p in enumerate(params):
            store.set(i, p)
        return store.view(0, len(params))


class RowParams:
    """Per-slot sampling parameters on the device, written once per request at admission."""

    def __init__(self, slots: int, device=None):
        self.values = {name: torch.ones(slots, device=device) for name in ROW_FIELDS}  # [S] fp32
        self.ignore_eos = torch.zeros(slots, dtype=torch.bool, device=device)  # [S]
        self.host: list[SamplingParams | None] = [None] * slots

    def set(self, slot: int, p: SamplingParams) -> None:
        for name in ROW_FIELDS:
            self.values[name][slot] = float(getattr(p, name))
        self.ignore_eos[slot] = bool(p.ignore_eos)
        self.host[slot] = p

    def move(self, src: int, dst: int) -> None:
        for t in (*self.values.values(), self.ignore_eos):
            t[dst] = t[src]
        self.host[dst], self.host[src] = self.host[src], None

    def view(self, first: int, count: int) -> SamplingRows:
        """Slots first .. first+count-1 as [count, 1] rows."""
        sl = slice(first, first + count)
        host = [p for p in self.host[sl] if p is not None]
        return SamplingRows(**{name: self.values[name][sl, None] for name in ROW_FIELDS},
                            ignore_eos=self.ignore_eos[sl, None],
                            any_min_p=any(p.min_p > 0 for p in host), any_top_p=any(p.top_p < 1 for p in host),
                            any_penalty=any(p.repetition_penalty != 1 for p in host),
                            any_ignore_eos=any(p.ignore_eos for p in host))


# --- the chain, one function per processor (each [B, V] -> [B, V]; parameters float or [B, 1]) --------
def cfg_combine(step_logits: torch.Tensor, cfg_weight: float | torch.Tensor) -> torch.Tensor:
    """[B, 2, V] rows (cond, uncond) per request -> [B, V]."""
    cond, uncond = step_logits[:, 0], step_logits[:, 1]
    return cond + cfg_weight * (cond - uncond)


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float | torch.Tensor) -> torch.Tensor:
    """Each id in the history (`seen` [B, V] bool) once: negative logits * penalty, others / penalty.

    A penalty of exactly 1 leaves a row bit-identical (x * 1 and x / 1 are exact)."""
    if not isinstance(penalty, torch.Tensor) and penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def min_p_filter(logits: torch.Tensor, min_p: float | torch.Tensor) -> torch.Tensor:
    """Drop (-inf) ids whose probability is below min_p * the top probability (min_p 0: no-op)."""
    if not isinstance(min_p, torch.Tensor) and min_p <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float | torch.Tensor) -> torch.Tensor:
    """Nucleus filter: drop the least likely ids whose cumulative probability is <= 1 - top_p.

    Rows with top_p >= 1 are returned unchanged (also when other rows filter)."""
    if not isinstance(top_p, torch.Tensor) and top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cum <= (1 - top_p)
    drop_sorted[..., -1:] = False  # always keep the most likely id
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    filtered = logits.masked_fill(drop, float("-inf"))
    return torch.where(top_p < 1, filtered, logits) if isinstance(top_p, torch.Tensor) else filtered


def next_token_probs(step_logits: torch.Tensor, seen: torch.Tensor, rows: SamplingRows,
                     banned: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, 2, V] step logits -> (probs [B, V], all_finite [B] bool): Chatterbox's chain.

    `banned` [V] bool: ids masked (-inf) right after the CFG combine in the rows with ignore_eos."""
    logits = cfg_combine(step_logits.float(), rows.cfg_weight)
    all_finite = torch.isfinite(logits).all(dim=-1)
    if banned is not None and rows.any_ignore_eos:
        logits = logits.masked_fill(banned & rows.ignore_eos, float("-inf"))  # [B, V]
    if rows.any_penalty:
        logits = repetition_penalty(logits, seen, rows.repetition_penalty)
    logits = logits / rows.temperature
    if rows.any_min_p:
        logits = min_p_filter(logits, rows.min_p)
    if rows.any_top_p:
        logits = top_p_filter(logits, rows.top_p)
    return torch.softmax(logits, dim=-1), all_finite


def sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One id per row by inverse CDF: probs [B, V], u [B] float64 in (0, 1) -> [B] long, no host sync.

    The id whose cumulative probability first exceeds u x (total mass): the same distribution as
    torch.multinomial, with one uniform per row (stages/t3/noise.py) instead of a generator, so a
    row's draw depends only on its own probabilities and its own (seed, step) and the op can live
    inside a captured graph. The cumulative sum runs in float64 along each row.
    """
    cum = probs.double().cumsum(dim=-1)  # [B, V]
    target = (u * cum[:, -1]).unsqueeze(-1)  # [B, 1], < the row's total for u < 1
    return (cum <= target).sum(dim=-1).clamp_max(probs.shape[-1] - 1)
