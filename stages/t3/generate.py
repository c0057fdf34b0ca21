"""One request through the T3 tick on its own: the single-request driver of the single-process path and tests.

There is one code path: `generate_tokens` admits the request into a `T3Batch` (a batch of
one) and ticks it until it ends, exactly as the stage worker drives many requests at once.

    batch = new_t3_batch(model, cfg, max_slots=4, device="cuda", dtype=torch.bfloat16)
    ids = encode_text("Hello there!", tok, cfg)
    for token in generate_tokens(batch, ids, conds, SamplingParams(seed=42)):
        ...                                            # ints in [0, 6561)
"""
from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Hashable, Iterator, Sequence

import torch

from stages.t3.batch import DEFAULT_MAX_LEN, FINISH_LENGTH, FINISH_STOP, Admission, Event, T3Batch  # noqa: F401 (re-exported)
from stages.t3.conds import T3Conditionals
from stages.t3.config import T3Config
from stages.t3.llama_tick import LlamaTickModel
from stages.t3.model import T3
from stages.t3.prefix_cache import DEFAULT_PREFIX_CACHE_SIZE
from stages.t3.sampling import SamplingParams


class T3RequestError(RuntimeError):
    """One request failed during generation (e.g. non-finite logits). The batch stays usable."""


def new_t3_batch(model: T3, cfg: T3Config, max_slots: int = 4, max_len: int = DEFAULT_MAX_LEN,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 prefix_cache_size: int = DEFAULT_PREFIX_CACHE_SIZE, **batch_options) -> T3Batch:
    """The tick over Chatterbox's Llama T3 (allocates the KV cache: max_slots x max_len positions)."""
    if max_len < cfg.prefill_len(1) + 1:
        raise ValueError(f"max_len {max_len} is shorter than the smallest request ({cfg.prefill_len(1) + 1})")
    tick_model = LlamaTickModel(model, cfg, max_len, device, dtype)
    return T3Batch(tick_model, max_slots, max_len, prefix_cache_size, **batch_options)


def admission(batch: T3Batch, rid: str, text_token_ids: Sequence[int] | torch.Tensor, conds: T3Conditionals,
              params: SamplingParams | None = None, voice_key: Hashable | None = None) -> Admission:
    """Validate one request (ValueError naming the field, no compute) and resolve its seed."""
    params = params or SamplingParams()
    params = replace(params.validate(), seed=params.resolved_seed())
    ids, max_new = batch.check(text_token_ids, conds, params)
    return Admission(rid, ids, conds, voice_key if voice_key is not None else conds.cache_key(), params, max_new)


def generate_tokens(batch: T3Batch, text_token_ids: Sequence[int] | torch.Tensor, conds: T3Conditionals,
                    params: SamplingParams | None = None, voice_key: Hashable | None = None) -> Iterator[int]:
    """Yield the speech tokens (< 6561) of one request; the slot is freed even if the caller stops early.

    Validated and prefilled eagerly (bad input raises here, not at the first next()). The batch must
    have no other active request (a shared batch is driven with admit/tick, as the T3 worker does).
    Raises T3RequestError if the request fails (e.g. non-finite logits).
    """
    if batch.active:
        raise RuntimeError("generate_tokens needs an idle T3Batch; drive a shared one with admit() and tick()")
    adm = admission(batch, f"solo-{uuid.uuid4().hex}", text_token_ids, conds, params, voice_key)
    return _drain(batch, adm.rid, batch.admit([adm]))


def _drain(batch: T3Batch, rid: str, events: list[Event]) -> Iterator[int]:
    try:
        while True:
            for ev in events:
                if ev.error:
                    raise T3RequestError(ev.error)
                if ev.token is not None:
                    yield ev.token
                if ev.finish:
                    return
            events = batch.tick()
    finally:
        batch.cancel(rid)
        batch.compact()
