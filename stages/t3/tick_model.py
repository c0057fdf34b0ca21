"""What the batched T3 tick needs of a model family: the small interface behind which each T3 variant sits.

The tick (stages/t3/batch.py) knows requests, slots, cache positions, draws and finishing; a
`TickModel` knows everything model-specific: how many batch rows a request takes (2 with
classifier-free guidance, 1 without), the voice prefix and its length, the embeddings of the
text prefill and of a decode step, what a cache position means to the backbone (RoPE angle,
learned absolute position, ...), and the logits -> probabilities chain (its processors and
their order). Chatterbox's Llama T3 is `stages/t3/llama_tick.py`; Chatterbox Turbo (GPT-2,
no CFG, temperature -> top-k -> top-p -> repetition penalty) implements the same interface.

Conventions: a batch of B requests has B * rows rows, request b owning rows b*rows .. b*rows+rows-1.
Cache positions run 0, 1, 2, ... over the whole sequence of a request (prefix, text, then one per
fed token); the model maps them to whatever its positional scheme needs.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch

from stages.t3.prefix_cache import Prefix
from stages.t3.sampling import SamplingRows


class TickModel(Protocol):
    rows: int  # batch rows per request
    num_layers: int  # cache geometry: layers, KV heads, head dim
    kv_heads: int
    head_dim: int
    vocab_size: int  # width of the logits and of the repetition history
    num_codes: int  # sampled ids below this are speech tokens (handed out); others are control ids
    stop_token: int  # the sampled id that ends a request (unless ignore_eos)
    history_start: tuple[int, ...]  # ids in the repetition history before the first draw
    max_speech_tokens: int  # largest max_new_tokens the position tables allow
    device: torch.device
    dtype: torch.dtype

    # Optional members (T3Batch reads them with these defaults, the Llama T3's behaviour):
    #   keep_history_start: bool = True  -- False: a request's first draw removes history_start from its history
    #   eos_checks_first: bool = True    -- False: the first draw (from the prefill) is never a stop
    #   new_row_params(slots) -> store   -- the per-slot parameter store (set/move/view) `probs` reads;
    #                                       default stages.t3.sampling.RowParams

    def check_text(self, text_token_ids: Any) -> list[int]:
        """Validated text ids (ValueError naming `text_token_ids`)."""

    def prefix_len(self, conds: Any) -> int:
        """Cache positions of the voice prefix of `conds`."""

    def text_len(self, n_text: int) -> int:
        """Cache positions the text prefill writes after the prefix, for n_text text ids."""

    def default_max_new_tokens(self, n_text: int) -> int:
        """max_new_tokens when the request sets none."""

    def prefix(self, conds: Any, exaggeration: float) -> Prefix:
        """The voice prefix's K/V at positions 0..prefix_len-1 (one model call; the tick caches it)."""

    def text_inputs(self, text_ids: Sequence[int]) -> torch.Tensor:
        """Input embeddings of the text prefill [rows, text_len, D]."""

    def step_inputs(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """tokens [B] (the last draws), index [B] (each token's index among the request's draws, from 0)
        -> decode inputs [B * rows, 1, D]."""

    def forward(self, x: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor,
                k_caches: list[torch.Tensor], v_caches: list[torch.Tensor]) -> torch.Tensor:
        """x [N, t, D] at cache positions [N, t]; visible [N, 1, t, span] bool; caches one [M, Hkv, max_len, hd]
        per layer, M <= N (written at `positions`, read over 0..span-1) -> final hidden states [N, t, D].
        Rows of x past M are padding that only widens the matmuls (the tick pads small batches so a
        row's sums round the same way at every batch size): they touch no cache, their output is unused."""

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B * rows, D] -> fp32 logits [B, rows, V]."""

    def probs(self, logits: torch.Tensor, rows: SamplingRows, seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B, rows, V], the rows' parameters, the repetition history seen [B, V] bool
        -> (probabilities [B, V], all-finite [B] bool). Row-wise: a row never reads another."""
