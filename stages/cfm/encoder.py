"""The flow's token encoder (reference `UpsampleConformerEncoder`): speech-token embeddings -> 50 Hz hidden states.

Run by `stages.cfm.flow.Flow.encode`. Attention is full-context (bidirectional) over the whole
token sequence; only the pre-lookahead and up-sampling convolutions are causal/look-ahead by design.
Module and parameter names follow the checkpoint (`flow.encoder.*`) so weights load unchanged.
Inputs carry no padding (one sequence at a time), so no padding masks are built.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stages.cfm.config import CFMConfig

PE_BASE = 10000.0  # sinusoid wavelength base of the ESPnet relative positional encoding
LEAKY_SLOPE = 0.01  # F.leaky_relu default, as in the reference PreLookaheadLayer
UPSAMPLE = 2  # the encoder's time up-sampling = token_mel_ratio of every released model


def relative_positions(length: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """ESPnet relative sinusoidal table for relative offsets +(L-1) ... 0 ... -(L-1).  # [1, 2L-1, dim]

    Row m encodes the offset (L-1) - m, i.e. query position minus key position.
    """
    # built in fp32 on the target device (no host->device copy per call), then cast
    pos = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)  # [L, 1]
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * -(math.log(PE_BASE) / dim))  # [dim/2]
    positive = torch.zeros(length, dim, device=device)
    negative = torch.zeros(length, dim, device=device)
    positive[:, 0::2] = torch.sin(pos * inv)
    positive[:, 1::2] = torch.cos(pos * inv)
    negative[:, 0::2] = torch.sin(-1 * pos * inv)
    negative[:, 1::2] = torch.cos(-1 * pos * inv)
    table = torch.cat([positive.flip(0), negative[1:]], dim=0)  # [2L-1, dim]
    return table.unsqueeze(0).to(dtype)


def rel_to_abs(scores: torch.Tensor) -> torch.Tensor:
    """Re-index relative-offset scores to key positions: out[..., i, j] = scores[..., i, (L-1) - i + j].

    [B, H, L, 2L-1] -> [B, H, L, L]; same values as Transformer-XL's pad-and-reshape shift.
    """
    length = scores.size(-2)
    idx = torch.arange(length, device=scores.device)
    gather = (length - 1) - idx.unsqueeze(1) + idx.unsqueeze(0)  # [L, L], values in [0, 2L-2]
    return scores.gather(-1, gather.expand(*scores.shape[:-1], length))


class LinearEmbed(nn.Module):
    """Linear -> LayerNorm -> x*sqrt(d), plus the relative position table (reference LinearNoSubsampling)."""

    def __init__(self, cfg: CFMConfig):
        super().__init__()
        self.dim = cfg.encoder_dim
        self.out = nn.Sequential(nn.Linear(cfg.input_size, cfg.encoder_dim), nn.LayerNorm(cfg.encoder_dim, eps=cfg.embed_ln_eps))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.out(x) * math.sqrt(self.dim)  # [B, L, D]
        return x, relative_positions(x.size(1), self.dim, x.dtype, x.device)  # [1, 2L-1, D]


class PreLookaheadLayer(nn.Module):
    """Gives each token `pre_lookahead_len` tokens of right context: conv(k=L+1, right pad) -> leaky_relu -> causal conv(k=3) -> residual."""

    def __init__(self, channels: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, L, C]
        h = x.transpose(1, 2)  # [B, C, L]
        h = F.leaky_relu(self.conv1(F.pad(h, (0, self.lookahead))), LEAKY_SLOPE)
        h = self.conv2(F.pad(h, (self.conv2.kernel_size[0] - 1, 0)))
        return h.transpose(1, 2) + x  # [B, L, C]


class UpsampleLayer(nn.Module):
    """Nearest x2 in time, then a causal conv (left pad 2*stride, k = 2*stride+1)."""

    def __init__(self, channels: int, stride: int = UPSAMPLE):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, kernel_size=2 * stride + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, L]
        h = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")  # [B, C, 2L]
        return self.conv(F.pad(h, (2 * self.stride, 0)))  # [B, C, 2L]


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (pos_bias_u / pos_bias_v)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.d_k = heads, dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        q = self.linear_q(x).view(b, length, self.heads, self.d_k)  # [B, L, H, dk]
        k = self.linear_k(x).view(b, length, self.heads, self.d_k).transpose(1, 2)  # [B, H, L, dk]
        v = self.linear_v(x).view(b, length, self.heads, self.d_k).transpose(1, 2)  # [B, H, L, dk]
        p = self.linear_pos(pos).view(pos.size(0), -1, self.heads, self.d_k).transpose(1, 2)  # [1, H, 2L-1, dk]
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))  # [B, H, L, L]
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))  # [B, H, L, 2L-1]
        scores = (content + rel_to_abs(position)) / math.sqrt(self.d_k)  # [B, H, L, L]
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, H, L, dk]
        return self.linear_out(out.transpose(1, 2).reshape(b, length, -1))  # [B, L, D]


class FeedForward(nn.Module):
    """w_1 -> SiLU -> w_2 (reference PositionwiseFeedForward with `swish`)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-norm layer: x + MHSA(LN(x)), then x + FFN(LN(x)); no macaron FFN, no conv module."""

    def __init__(self, cfg: CFMConfig):
        super().__init__()
        self.self_attn = RelPositionAttention(cfg.encoder_dim, cfg.encoder_heads)
        self.feed_forward = FeedForward(cfg.encoder_dim, cfg.encoder_linear_units)
        self.norm_mha = nn.LayerNorm(cfg.encoder_dim, eps=cfg.encoder_ln_eps)
        self.norm_ff = nn.LayerNorm(cfg.encoder_dim, eps=cfg.encoder_ln_eps)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos)
        return x + self.feed_forward(self.norm_ff(x))


class UpsampleConformerEncoder(nn.Module):
    """Token embeddings [B, T, input_size] -> hidden states [B, 2T, encoder_dim]."""

    def __init__(self, cfg: CFMConfig):
        super().__init__()
        if cfg.token_mel_ratio != UPSAMPLE:
            raise ValueError(f"the encoder up-samples by {UPSAMPLE}; token_mel_ratio {cfg.token_mel_ratio} is unsupported")
        self.embed = LinearEmbed(cfg)
        self.pre_lookahead_layer = PreLookaheadLayer(cfg.encoder_dim, cfg.pre_lookahead_len)
        self.encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.encoder_blocks))
        self.up_layer = UpsampleLayer(cfg.encoder_dim)
        self.up_embed = LinearEmbed(cfg)
        self.up_encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.encoder_up_blocks))
        self.after_norm = nn.LayerNorm(cfg.encoder_dim, eps=cfg.embed_ln_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pos = self.embed(x)  # [B, T, D], [1, 2T-1, D]
        x = self.pre_lookahead_layer(x)
        for layer in self.encoders:
            x = layer(x, pos)
        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)  # [B, 2T, D]
        x, pos = self.up_embed(x)  # [B, 2T, D], [1, 4T-1, D]
        for layer in self.up_encoders:
            x = layer(x, pos)
        return self.after_norm(x)  # [B, 2T, D]
