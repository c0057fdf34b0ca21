"""Chatterbox Turbo's T3: text tokens + voice -> speech-token logits around the GPT-2 backbone (pure modules).

Parameter names match `t3_turbo_v1.safetensors`, minus the two tables inference never reads
(`tfmr.wte`, `text_head`: checked at load time, not kept). Differences from the base T3
(stages/t3/model.py): the conditioning is [spkr_enc(speaker_emb) | speech_emb(prompt)] with no
position table, perceiver or emotion token; text ids are fed unpadded; no CFG row (one row per
request); `speech_head` has a bias. Running the model lives in stages/t3/turbo_generate.py.
"""
from __future__ import annotations

import torch
from torch import nn

from stages.t3.gpt2 import GPT2Backbone
from stages.t3.turbo_config import TurboT3Config

UNUSED_KEYS = ("tfmr.wte.weight", "text_head.weight")  # in the file (strict load), never used at inference


class TurboCondEncoder(nn.Module):
    """`cond_enc` in the checkpoint: only the speaker projection (Linear 256 -> D, with bias)."""

    def __init__(self, cfg: TurboT3Config):
        super().__init__()
        self.speaker_embed_size = cfg.speaker_embed_size
        self.spkr_enc = nn.Linear(cfg.speaker_embed_size, cfg.hidden_size)

    def forward(self, speaker_emb: torch.Tensor, prompt_emb: torch.Tensor) -> torch.Tensor:
        """speaker_emb [B, 256], prompt_emb [B, P, D] -> [B, 1 + P, D]."""
        spk = self.spkr_enc(speaker_emb.view(-1, self.speaker_embed_size))[:, None]  # [B, 1, D]
        return torch.cat((spk, prompt_emb), dim=1)


class TurboT3(nn.Module):
    def __init__(self, cfg: TurboT3Config):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.tfmr = GPT2Backbone(cfg)
        self.cond_enc = TurboCondEncoder(cfg)
        self.text_emb = nn.Embedding(cfg.text_vocab_size, d)
        self.speech_emb = nn.Embedding(cfg.speech_vocab_size, d)
        self.speech_head = nn.Linear(d, cfg.speech_vocab_size, bias=True)

    # --- input embeddings -----------------------------------------------------
    def conditioning(self, speaker_emb: torch.Tensor, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """[B, 256], [B, P] int64 -> [B, 1 + P, D]: the raw prompt embeddings, no position term."""
        dtype = self.speech_emb.weight.dtype
        return self.cond_enc(speaker_emb.to(dtype), self.speech_emb(prompt_tokens))

    def prefill_embeds(self, cond_emb: torch.Tensor, text_tokens: torch.Tensor) -> torch.Tensor:
        """cond_emb [1, C, D], unpadded text ids [N] -> [1, C + N + 1, D] = [cond | text_emb | speech_emb(BOS)]."""
        bos = text_tokens.new_tensor([self.cfg.start_speech_token])
        text = self.text_emb(text_tokens)[None]  # [1, N, D]
        return torch.cat((cond_emb, text, self.speech_emb(bos)[None]), dim=1)

    def step_embeds(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B] long -> [B, 1, D]: speech_emb only (GPT-2 adds its position inside)."""
        return self.speech_emb(tokens)[:, None]

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Post-ln_f hidden state [..., D] -> speech logits [..., 6563] (fp32), bias included."""
        return self.speech_head(hidden).float()

    # --- one decode step over rows (what a batched tick calls) -----------------
    def decode_rows(self, tokens: torch.Tensor, pos: torch.Tensor, visible: torch.Tensor,
                    k_caches: list[torch.Tensor], v_caches: list[torch.Tensor]) -> torch.Tensor:
        """Feed one token per row and return the next logits.

        tokens [B] long (the ids sampled last), pos [B] long (each row's write position = its
        sequence length so far), visible [B, 1, 1, max_len] bool (cache positions <= pos[b]),
        caches one [B, H, max_len, hd] per layer (row b = that request's slot). -> [B, 6563] fp32.
        Static shapes and no host sync: capturable as a CUDA graph for a fixed B.
        """
        h = self.tfmr.decode(self.step_embeds(tokens), pos, visible, k_caches, v_caches)  # [B, 1, D]
        return self.speech_logits(h[:, 0])
