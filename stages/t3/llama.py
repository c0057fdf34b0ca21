"""The Llama backbone of T3: RMSNorm, llama3-scaled rotary embeddings, SDPA attention, SwiGLU MLP.

Pure modules; parameter names match the `tfmr.*` keys of `t3_cfg.safetensors`. Inputs are
embeddings (the backbone's own `embed_tokens` is a dummy kept only for strict loading). Two
entry points: `prefill` (causal attention over the prompt, K/V written into a cache slot) and
`decode` (one token per row, static shapes, K/V written by index, attention over the whole
slot under a position mask) so the decode step can be captured as a CUDA graph.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stages.t3.config import T3Config


class RMSNorm(nn.Module):
    is_norm = True  # tells schema_from_module to use the norm_weight init branch

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()  # statistics in fp32 even for bf16 activations
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def llama3_inv_freq(cfg: T3Config) -> torch.Tensor:
    """Rotary inverse frequencies [head_dim/2] with llama3 long-context scaling (fp32).

    Wavelengths longer than original_max/low_factor are slowed down by `rope_factor`, shorter than
    original_max/high_factor are kept, and the band in between is interpolated linearly in
    original_max/wavelength.
    """
    exponents = torch.arange(0, cfg.head_dim, 2, dtype=torch.int64).float() / cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** exponents)
    wavelen = 2 * math.pi / inv_freq
    long_wavelen = cfg.rope_original_max_positions / cfg.rope_low_freq_factor
    short_wavelen = cfg.rope_original_max_positions / cfg.rope_high_freq_factor
    scaled = torch.where(wavelen > long_wavelen, inv_freq / cfg.rope_factor, inv_freq)
    t = (cfg.rope_original_max_positions / wavelen - cfg.rope_low_freq_factor) / (
        cfg.rope_high_freq_factor - cfg.rope_low_freq_factor
    )
    blended = (1 - t) * scaled / cfg.rope_factor + t * scaled
    in_band = (wavelen >= short_wavelen) & (wavelen <= long_wavelen)
    return torch.where(in_band, blended, scaled)


def rope_tables(cfg: T3Config, n_positions: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [n_positions, head_dim] (fp32), halves duplicated as in rotate-half RoPE."""
    inv_freq = llama3_inv_freq(cfg).to(device)
    pos = torch.arange(n_positions, device=device, dtype=torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]  # [P, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [P, hd]
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, hd]; cos/sin [T, hd] already in x's dtype."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.hd, d, bias=False)

    def _qkv(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.hd).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(b, t, self.n_kv, self.hd).transpose(1, 2)  # [B, Hkv, T, hd]
        v = self.v_proj(x).view(b, t, self.n_kv, self.hd).transpose(1, 2)  # [B, Hkv, T, hd]
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.n_heads * self.hd))  # [B, T, D]

    def prefill(self, x, cos, sin, k_cache, v_cache):
        """x [B, T, D]; caches [B, Hkv, max_len, hd] (written at 0..T-1)."""
        q, k, v = self._qkv(x, cos, sin)
        t = x.shape[1]
        k_cache[:, :, :t].copy_(k)
        v_cache[:, :, :t].copy_(v)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_heads)
        return self._out(o)

    def decode(self, x, cos, sin, pos, visible, k_cache, v_cache):
        """x [B, 1, D]; pos [1] long (write index); visible [1, 1, 1, max_len] bool."""
        q, k, v = self._qkv(x, cos, sin)
        k_cache.index_copy_(2, pos, k)
        v_cache.index_copy_(2, pos, v)
        o = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=visible,
                                           enable_gqa=self.n_kv != self.n_heads)  # [B, H, 1, hd]
        return self._out(o)


class MLP(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def _mlp_residual(self, x):
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBackbone(nn.Module):
    """`tfmr` in the checkpoint. Returns the hidden state after the final RMSNorm."""

    def __init__(self, cfg: T3Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.backbone_vocab_size, cfg.hidden_size)  # unused, kept for strict load
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def prefill(self, x, cos, sin, k_caches, v_caches):
        """x [B, T, D] at positions 0..T-1; cos/sin [T, hd]; caches: one [B, Hkv, max_len, hd] per layer."""
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer, kc, vc in zip(self.layers, k_caches, v_caches):
            x = x + layer.self_attn.prefill(layer.input_layernorm(x), cos, sin, kc, vc)
            x = layer._mlp_residual(x)
        return self.norm(x)  # [B, T, D]

    def decode(self, x, cos, sin, pos, visible, k_caches, v_caches):
        """x [B, 1, D] at position `pos`; cos/sin [1, hd]; see Attention.decode."""
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer, kc, vc in zip(self.layers, k_caches, v_caches):
            x = x + layer.self_attn.decode(layer.input_layernorm(x), cos, sin, pos, visible, kc, vc)
            x = layer._mlp_residual(x)
        return self.norm(x)  # [B, 1, D]
