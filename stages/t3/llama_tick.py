"""Chatterbox's Llama T3 behind the tick's `TickModel` interface: two CFG rows, RoPE over cache positions.

Per request the sequence is [conditioning (34)][255 text 0][BOS][BOS] then one position per fed
speech token. The conditioning is the voice prefix (the same for both CFG rows, so it is computed
with one row and copied into both); RoPE angles are the cache positions; the learned text and
speech position tables restart per segment (text 0..N+1, both BOS at speech position 0, the k-th
drawn token fed at speech position k+1).
"""
from __future__ import annotations

import operator
from typing import Sequence

import torch

from stages.t3.conds import T3Conditionals
from stages.t3.config import T3Config
from stages.t3.llama import rope_tables
from stages.t3.model import CFG_ROWS, T3
from stages.t3.prefix_cache import Prefix
from stages.t3.sampling import SamplingRows, default_max_new_tokens, next_token_probs

TEXT_PADDING = 2 + 2  # [start text] ... [stop text], then the two BOS positions


class LlamaTickModel:
    rows = CFG_ROWS

    def __init__(self, model: T3, cfg: T3Config, max_len: int, device="cpu", dtype=torch.float32):
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.num_layers, self.kv_heads, self.head_dim = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
        self.vocab_size, self.num_codes, self.stop_token = cfg.speech_vocab_size, cfg.num_speech_codes, cfg.stop_speech_token
        self.history_start = (cfg.start_speech_token,)  # the reference's history starts with BOS
        self.max_speech_tokens = cfg.max_speech_tokens
        self.cos, self.sin = rope_tables(cfg, max_len, self.device)  # [max_len, hd] fp32
        # ids a request with ignore_eos may never sample: start/stop and the spare ids above them
        self.control_ids = torch.arange(cfg.speech_vocab_size, device=self.device) >= cfg.num_speech_codes

    # --- sizes and validation ----------------------------------------------------------
    def check_text(self, text_token_ids) -> list[int]:
        if isinstance(text_token_ids, torch.Tensor):
            if text_token_ids.is_floating_point() or text_token_ids.ndim not in (1, 2) or \
                    (text_token_ids.ndim == 2 and text_token_ids.shape[0] != 1):
                raise ValueError(f"text_token_ids must be integer ids [N] or [1, N], got "
                                 f"{text_token_ids.dtype} {list(text_token_ids.shape)}")
            ids = text_token_ids.reshape(-1).tolist()
        else:
            ids = list(text_token_ids)
        if not ids:
            raise ValueError("text_token_ids is empty")
        try:  # accept Python and numpy integers, refuse floats and bools
            if any(isinstance(i, bool) for i in ids):
                raise TypeError
            ids = [operator.index(i) for i in ids]
        except TypeError:
            raise ValueError("text_token_ids must be integers") from None
        if len(ids) > self.cfg.max_text_tokens:
            raise ValueError(f"text_token_ids: {len(ids)} tokens exceed the text position table "
                             f"({self.cfg.max_text_tokens})")
        if min(ids) < 0 or max(ids) >= self.cfg.text_vocab_size:
            raise ValueError(f"text_token_ids: ids must be in [0, {self.cfg.text_vocab_size})")
        return ids

    def prefix_len(self, conds: T3Conditionals) -> int:
        return self.cfg.cond_len

    def text_len(self, n_text: int) -> int:
        return n_text + TEXT_PADDING

    def default_max_new_tokens(self, n_text: int) -> int:
        return default_max_new_tokens(n_text)

    # --- model calls -------------------------------------------------------------------
    @torch.inference_mode()
    def prefix(self, conds: T3Conditionals, exaggeration: float) -> Prefix:
        m, dev = self.model, self.device
        emotion = torch.full((1, 1, 1), float(exaggeration), device=dev)
        cond = m.conditioning(conds.speaker_emb.to(dev), conds.cond_prompt_speech_tokens.to(dev), emotion)  # [1, C, D]
        c = cond.shape[1]
        shape = (1, self.kv_heads, c, self.head_dim)
        k = [torch.empty(shape, device=dev, dtype=self.dtype) for _ in range(self.num_layers)]
        v = [torch.empty(shape, device=dev, dtype=self.dtype) for _ in range(self.num_layers)]
        m.tfmr.prefill(cond, self.cos[:c], self.sin[:c], k, v)  # one row: both CFG rows share the conditioning
        return Prefix(k, v)

    @torch.inference_mode()
    def text_inputs(self, text_ids: Sequence[int]) -> torch.Tensor:
        text = torch.tensor(list(text_ids), dtype=torch.long, device=self.device)
        return self.model.text_embeds(self.model.pad_text(text))  # [2, N + 4, D]

    @torch.inference_mode()
    def step_inputs(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.model.speech_step_embeds(tokens, index + 1)  # the k-th draw is fed at speech position k+1

    @torch.inference_mode()
    def forward(self, x, positions, visible, k_caches, v_caches) -> torch.Tensor:
        cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)  # [N, 1, t, hd]
        return self.model.tfmr.decode(x, cos, sin, positions, visible, k_caches, v_caches)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.speech_logits(hidden).view(-1, self.rows, self.vocab_size)  # [B, 2, V] fp32

    def probs(self, logits: torch.Tensor, rows: SamplingRows, seen: torch.Tensor):
        return next_token_probs(logits, seen, rows, self.control_ids)
