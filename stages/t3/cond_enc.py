"""T3 conditioning encoder: speaker embedding, perceiver-resampled speech prompt, emotion scalar -> 34 tokens."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.t3.config import T3Config


class AttentionBlock(nn.Module):
    """Pre-norm multi-head attention with one LayerNorm shared by the query and key/value inputs.

    No MLP; the output is `x_q + proj_out(attn)`. SDPA's default scale 1/sqrt(channels/heads).
    """

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.proj_out = nn.Linear(channels, channels)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        return x.view(b, t, self.heads, c // self.heads).transpose(1, 2)  # [B, h, T, c/h]

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        """x_q [B, Tq, C], x_kv [B, Tk, C] -> [B, Tq, C]."""
        nq, nkv = self.norm(x_q), self.norm(x_kv)
        q, k, v = self._split(self.to_q(nq)), self._split(self.to_k(nkv)), self._split(self.to_v(nkv))
        o = F.scaled_dot_product_attention(q, k, v)  # [B, h, Tq, c/h]
        b, _, tq, _ = o.shape
        o = o.transpose(1, 2).reshape(b, tq, -1)  # [B, Tq, C]
        return x_q + self.proj_out(o)


class Perceiver(nn.Module):
    """Learned queries attend to the prompt (cross), then to themselves (self), with the SAME block."""

    def __init__(self, cfg: T3Config):
        super().__init__()
        self.pre_attention_query = nn.Parameter(torch.zeros(1, cfg.perceiver_queries, cfg.hidden_size))
        self.attn = AttentionBlock(cfg.hidden_size, cfg.perceiver_heads)

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        """prompt [B, P, D] -> [B, Q, D]."""
        q = self.pre_attention_query.expand(prompt.shape[0], -1, -1)
        h = self.attn(q, prompt)
        return self.attn(h, h)


class CondEncoder(nn.Module):
    """`cond_enc` in the checkpoint: [speaker (1)][perceiver (Q)][emotion (1)]."""

    def __init__(self, cfg: T3Config):
        super().__init__()
        self.cfg = cfg
        self.spkr_enc = nn.Linear(cfg.speaker_embed_size, cfg.hidden_size)
        self.emotion_adv_fc = nn.Linear(1, cfg.hidden_size, bias=False)
        self.perceiver = Perceiver(cfg)

    def forward(self, speaker_emb: torch.Tensor, prompt_emb: torch.Tensor, emotion_adv: torch.Tensor) -> torch.Tensor:
        """speaker_emb [B, 256], prompt_emb [B, P, D] (already position-embedded), emotion_adv [B, 1, 1]."""
        spk = self.spkr_enc(speaker_emb.view(-1, self.cfg.speaker_embed_size))[:, None]  # [B, 1, D]
        prompt = self.perceiver(prompt_emb)  # [B, Q, D]
        emo = self.emotion_adv_fc(emotion_adv.view(-1, 1, 1))  # [B, 1, D]
        return torch.cat((spk, prompt, emo), dim=1)  # [B, 1 + Q + 1, D]
