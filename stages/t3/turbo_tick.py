"""Chatterbox Turbo's GPT-2 T3 behind the tick's `TickModel` interface: one row per request, learned positions.

Per request the sequence is [speaker (1)][prompt speech tokens (P)][text (N)][BOS] then one
position per fed sample, and GPT-2 adds `wpe(cache position)` to every input, so a cache
position *is* the model's position (no per-segment restart as in the Llama T3). The voice
prefix is the first 1 + P positions (speaker projection + raw prompt embeddings; no emotion, so
the exaggeration plays no part); the text prefill writes N + 1 positions.

Sampling is Turbo's chain (stages/t3/turbo_sampling.py): temperature -> top-k -> top-p ->
repetition penalty -> softmax, with per-row parameters, drawn by the tick's counter-based
inverse CDF (the same draw as the base model's, so a request's tokens do not depend on its
batch-mates). The reference's history rules are the tick's two flags below: the first sample
(from the prefill) sees {BOS} and then replaces it, and it is not EOS-checked (a 6562 there is
fed back like any id). All-`-inf` processed logits fail the request like non-finite ones (the
reference stops there; only a broken model produces them, since every filter keeps the top id).
"""
from __future__ import annotations

from typing import Sequence

import torch

from stages.t3.prefix_cache import Prefix
from stages.t3.turbo_conds import TurboT3Conditionals
from stages.t3.turbo_config import TurboT3Config
from stages.t3.turbo_generate import check_text_ids
from stages.t3.turbo_model import TurboT3
from stages.t3.turbo_sampling import TURBO_MAX_SAMPLES, RowParams, process_logits

# Default slot length: a 375-token voice prefix, ~670 text tokens and the reference's 1001 samples
# (384 MiB fp32 per slot at `turbo` size); capped at the position table (n_positions).
TURBO_MAX_LEN = 2048


class TurboTickModel:
    rows = 1  # no CFG
    keep_history_start = False  # the first sample replaces the BOS in the repetition history
    eos_checks_first = False  # the first sample (from the prefill) is never an EOS

    def __init__(self, model: TurboT3, cfg: TurboT3Config, device="cpu", dtype=torch.float32):
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.num_layers, self.kv_heads, self.head_dim = cfg.num_layers, cfg.num_heads, cfg.head_dim
        self.vocab_size, self.num_codes, self.stop_token = cfg.speech_vocab_size, cfg.num_speech_codes, cfg.stop_speech_token
        self.history_start = (cfg.start_speech_token,)
        self.max_speech_tokens = TURBO_MAX_SAMPLES  # samples, EOS included: the reference's 1 + 1000
        # ids a request with ignore_eos may never sample: BOS/EOS
        self.control_ids = torch.arange(cfg.speech_vocab_size, device=self.device) >= cfg.num_speech_codes

    # --- sizes and validation ----------------------------------------------------------
    def check_text(self, text_token_ids) -> list[int]:
        return check_text_ids(text_token_ids, self.cfg)

    def prefix_len(self, conds: TurboT3Conditionals) -> int:
        return self.cfg.cond_len(conds.n_prompt)

    def text_len(self, n_text: int) -> int:
        return n_text + 1  # the text, then the BOS

    def default_max_new_tokens(self, n_text: int) -> int:
        return TURBO_MAX_SAMPLES  # the reference caps by its loop only

    def new_row_params(self, slots: int) -> RowParams:
        return RowParams(slots, self.device)

    # --- model calls -------------------------------------------------------------------
    @torch.inference_mode()
    def prefix(self, conds: TurboT3Conditionals, exaggeration: float) -> Prefix:
        m, dev = self.model, self.device
        conds.check(self.cfg)
        cond = m.conditioning(conds.speaker_emb.to(dev), conds.cond_prompt_speech_tokens.to(dev))  # [1, 1 + P, D]
        shape = (1, self.kv_heads, cond.shape[1], self.head_dim)
        k = [torch.empty(shape, device=dev, dtype=self.dtype) for _ in range(self.num_layers)]
        v = [torch.empty(shape, device=dev, dtype=self.dtype) for _ in range(self.num_layers)]
        m.tfmr.prefill(cond, k, v)  # positions 0..P
        return Prefix(k, v)

    @torch.inference_mode()
    def text_inputs(self, text_ids: Sequence[int]) -> torch.Tensor:
        text = torch.tensor(list(text_ids), dtype=torch.long, device=self.device)
        bos = text.new_tensor([self.cfg.start_speech_token])
        return torch.cat((self.model.text_emb(text), self.model.speech_emb(bos)))[None]  # [1, N + 1, D]

    @torch.inference_mode()
    def step_inputs(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.model.step_embeds(tokens)  # [B, 1, D]: the position comes from the cache position

    @torch.inference_mode()
    def forward(self, x, positions, visible, k_caches, v_caches) -> torch.Tensor:
        return self.model.tfmr.tick(x, positions, visible, k_caches, v_caches)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.speech_logits(hidden).view(-1, 1, self.vocab_size)  # [B, 1, V] fp32

    def probs(self, logits: torch.Tensor, rows: RowParams, seen: torch.Tensor):
        raw = logits[:, 0].float()  # [B, V]
        bad = (torch.isnan(raw) | torch.isposinf(raw)).any(dim=-1)  # [B]
        raw = raw.masked_fill(rows.ban_control[:, None] & self.control_ids[None, :], float("-inf"))
        processed = process_logits(raw, rows, seen)
        exhausted = (processed == float("-inf")).all(dim=-1)  # [B]
        return torch.softmax(processed, dim=-1), ~(bad | exhausted)
