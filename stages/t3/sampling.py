"""Per-request sampling parameters and the logits -> probabilities chain of the reference.

Order per step (reference `T3.inference` with Chatterbox's `generate()` defaults):
CFG combine -> repetition penalty -> / temperature -> min-p -> top-p -> softmax -> sample.
Everything runs on the device without host synchronisation; the caller fetches one token.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import torch

# Default cap on new speech tokens when the request sets none: speech runs at 25 tokens/s and
# English BPE text averages well under one text token per 0.8 s of speech, so 20 speech tokens
# per text token plus a floor of 50 (2 s) covers normal speech; 1000 (40 s) is the reference's cap.
DEFAULT_TOKENS_PER_TEXT_TOKEN = 20
DEFAULT_MIN_NEW_TOKENS = 50
DEFAULT_MAX_NEW_TOKENS = 1000


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
        if real("cfg_weight") < 0:
            raise ValueError(f"cfg_weight must be >= 0, got {self.cfg_weight!r}")
        if real("exaggeration") < 0:
            raise ValueError(f"exaggeration must be >= 0, got {self.exaggeration!r}")
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


# --- the chain, one function per processor (each [.., V] -> [.., V]) ----------------------------
def cfg_combine(step_logits: torch.Tensor, cfg_weight: float) -> torch.Tensor:
    """[2, V] rows (cond, uncond) -> [1, V]."""
    cond, uncond = step_logits[0:1], step_logits[1:2]
    return cond + cfg_weight * (cond - uncond)


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Each id in the history (`seen` [V] bool) once: negative logits * penalty, others / penalty."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop (-inf) ids whose probability is below min_p * the top probability."""
    if min_p <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: drop the least likely ids whose cumulative probability is <= 1 - top_p."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cum <= (1 - top_p)
    drop_sorted[..., -1:] = False  # always keep the most likely id
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_token_probs(step_logits: torch.Tensor, seen: torch.Tensor, params: SamplingParams,
                     banned: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[2, V] step logits -> (probs [1, V], all_finite [] bool). `banned` [V] bool ids get -inf first."""
    logits = cfg_combine(step_logits.float(), params.cfg_weight)
    all_finite = torch.isfinite(logits).all()
    if banned is not None:
        logits = logits.masked_fill(banned, float("-inf"))
    logits = repetition_penalty(logits, seen, params.repetition_penalty)
    logits = logits / params.temperature
    logits = min_p_filter(logits, params.min_p)
    logits = top_p_filter(logits, params.top_p)
    return torch.softmax(logits, dim=-1), all_finite


def sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One id per row from probs [B, V] -> [B] long, without a host sync.

    argmax(p / E) with E ~ Exp(1) i.i.d. picks id i with probability p_i (the exponential race),
    like torch.multinomial but as pure tensor ops, so it can live inside a captured graph.
    """
    e = torch.empty_like(probs).exponential_(generator=generator).clamp_min_(1e-20)  # avoid 0/0
    return torch.argmax(probs / e, dim=-1)
