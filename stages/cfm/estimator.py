"""The CFM velocity estimator (reference `ConditionalDecoder`): a one-level 1-D U-Net with transformer blocks.

Called once per Euler step by `stages.cfm.solver.solve_euler_cfg` on the CFG batch of 2.
Convolutions are causal (left padding only); attention is bidirectional with a padding-only mask.
Module and parameter names follow the checkpoint (`flow.decoder.estimator.*`); index-named
children (`block.0`, `block.2`, `to_out.0`, `ff.net.0`, `ff.net.2`) keep the reference's slots.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stages.cfm.config import CFMConfig

TIME_SCALE = 1000.0  # t in [0, 1] is scaled to [0, 1000] before the sinusoidal embedding
TIME_BASE = 10000.0  # sinusoid wavelength base of the time embedding
CONV_KERNEL = 3  # every causal conv of the estimator
FF_MULT = 4  # transformer feed-forward width = FF_MULT x channels
MASK_BIAS = -1.0e10  # additive attention bias of a padded key (reference mask_to_bias)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t*1000: [sin | cos] over dim/2 log-spaced frequencies.  [B] -> [B, dim]"""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(TIME_BASE) / (half - 1)))  # [half]
    arg = TIME_SCALE * t.float().unsqueeze(1) * freqs.unsqueeze(0)  # [B, half]
    return torch.cat((arg.sin(), arg.cos()), dim=-1).to(t.dtype)


class TimeMLP(nn.Module):
    """linear_1 -> SiLU -> linear_2 (diffusers TimestepEmbedding)."""

    def __init__(self, dim_in: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim_in, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(t)))


class CausalConv1d(nn.Conv1d):
    """Conv1d that sees only the current and past frames (left pad kernel-1)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = CONV_KERNEL):
        super().__init__(c_in, c_out, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C', T]
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class SwapTC(nn.Module):
    """[B, C, T] <-> [B, T, C], so a LayerNorm normalises over channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class CausalBlock(nn.Module):
    """(x*mask) -> causal conv -> LayerNorm over channels -> Mish -> *mask."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.block = nn.Sequential(CausalConv1d(c_in, c_out), SwapTC(), nn.LayerNorm(c_out), SwapTC(), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class CausalResBlock(nn.Module):
    """block1 -> + time projection -> block2 -> + 1x1 residual conv of the input."""

    def __init__(self, c_in: int, c_out: int, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, c_out))
        self.block1 = CausalBlock(c_in, c_out)
        self.block2 = CausalBlock(c_out, c_out)
        self.res_conv = nn.Conv1d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.mlp(t_emb).unsqueeze(-1)  # [B, C, T]
        return self.block2(h, mask) + self.res_conv(x * mask)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention; q/k/v without bias, output projection with bias."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # x: [B, T, C], bias: [B, 1, 1, T]
        b, length, _ = x.shape
        q, k, v = (p(x).view(b, length, self.heads, self.head_dim).transpose(1, 2) for p in (self.to_q, self.to_k, self.to_v))  # [B, H, T, d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, H, T, d], scale 1/sqrt(d)
        return self.to_out(out.transpose(1, 2).reshape(b, length, -1))  # [B, T, C]


class GeluIn(nn.Module):
    """Input projection followed by exact (erf) GELU (diffusers GELU)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(GeluIn(dim, FF_MULT * dim), nn.Identity(), nn.Linear(FF_MULT * dim, dim))  # slot 1 = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """x + Attn(LN(x)), then x + FF(LN(x)) (diffusers BasicTransformerBlock, self-attention only)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), bias)
        return x + self.ff(self.norm3(x))


def _stage(cfg: CFMConfig, c_in: int, with_conv: bool) -> nn.ModuleList:
    """[resnet, transformer blocks(, causal conv)] — one U-Net block in the reference's index layout."""
    c = cfg.estimator_channels
    parts: list[nn.Module] = [
        CausalResBlock(c_in, c, cfg.time_embed_dim),
        nn.ModuleList(TransformerBlock(c, cfg.estimator_heads, cfg.estimator_head_dim) for _ in range(cfg.estimator_n_blocks)),
    ]
    if with_conv:
        parts.append(CausalConv1d(c, c))
    return nn.ModuleList(parts)


class ConditionalDecoder(nn.Module):
    """v(x, t | mu, spks, cond): [B, 80, T] x 3 + [B, 80] + [B] -> velocity [B, 80, T]."""

    def __init__(self, cfg: CFMConfig):
        super().__init__()
        c = cfg.estimator_channels
        self.in_channels = cfg.estimator_in
        self.time_mlp = TimeMLP(cfg.estimator_in, cfg.time_embed_dim)
        self.down_blocks = nn.ModuleList([_stage(cfg, cfg.estimator_in, with_conv=True)])
        self.mid_blocks = nn.ModuleList(_stage(cfg, c, with_conv=False) for _ in range(cfg.estimator_mid_blocks))
        self.up_blocks = nn.ModuleList([_stage(cfg, 2 * c, with_conv=True)])  # input = concat(x, skip)
        self.final_block = CausalBlock(c, c)
        self.final_proj = nn.Conv1d(c, cfg.n_mels, 1)

    def embed_time(self, t: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        """Flow time [B] -> the embedding every ResBlock reads [B, time_embed_dim] (stages/cfm/meanflow.py
        overrides it to mix in the step's end time r)."""
        if r is not None:
            raise ValueError("this estimator has no time_embed_mixer: r is for meanflow estimators only")
        return self.time_mlp(timestep_embedding(t, self.in_channels))

    @staticmethod
    def _run_transformers(blocks: nn.ModuleList, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # [B, T, C]
        for block in blocks:
            h = block(h, bias)
        return h.transpose(1, 2)  # [B, C, T]

    def forward(
        self,
        x: torch.Tensor,  # [B, 80, T] current sample
        mask: torch.Tensor,  # [B, 1, T] 1 = real frame, 0 = padding
        mu: torch.Tensor,  # [B, 80, T] encoder output
        t: torch.Tensor,  # [B] flow time in [0, 1]
        spks: torch.Tensor,  # [B, 80] projected speaker embedding
        cond: torch.Tensor,  # [B, 80, T] prompt mel, zeros elsewhere
        r: torch.Tensor | None = None,  # [B] end time of the step: meanflow estimators only
    ) -> torch.Tensor:
        t_emb = self.embed_time(t, r)  # [B, time_embed_dim]
        h = torch.cat([x, mu, spks.unsqueeze(-1).expand(-1, -1, x.size(-1)), cond], dim=1)  # [B, 320, T]
        bias = ((1.0 - mask) * MASK_BIAS).unsqueeze(1)  # [B, 1, 1, T] additive key mask

        resnet, blocks, conv = self.down_blocks[0]
        h = self._run_transformers(blocks, resnet(h, mask, t_emb), bias)
        skip = h
        h = conv(h * mask)
        for resnet, blocks in self.mid_blocks:
            h = self._run_transformers(blocks, resnet(h, mask, t_emb), bias)
        resnet, blocks, conv = self.up_blocks[0]
        h = torch.cat([h, skip], dim=1)  # [B, 2C, T]
        h = self._run_transformers(blocks, resnet(h, mask, t_emb), bias)
        h = conv(h * mask)
        h = self.final_block(h, mask)
        return self.final_proj(h * mask) * mask  # [B, 80, T]
