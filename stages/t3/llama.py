"""The Llama backbone of T3: RMSNorm, llama3-scaled rotary embeddings, SDPA attention, SwiGLU MLP.

Pure modules; parameter names match the `tfmr.*` keys of `t3_cfg.safetensors`. Inputs are
embeddings (the backbone's own `embed_tokens` is a dummy kept only for strict loading). Two
entry points: `prefill` (causal attention over a sequence at positions 0..T-1, K/V written into
a cache: the voice prefix) and `decode` (t new positions per row, each row at its own positions:
K/V written by index, attention over the first `span` cache positions under a per-row mask),
used for a batch's decode tick (t = 1) and for the text prefill after a cached prefix (t > 1).
Shapes depend only on (rows, t, span), so a tick can be captured as a CUDA graph per bucket.
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
    """x [B, H, T, hd]; cos/sin [T, hd] or per row [B, 1, T, hd], already in x's dtype."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) | visible) v with plain matmuls: q [N, H, t, hd], k/v [N, Hkv, span, hd].

    Used for several query positions per row instead of SDPA: the CPU flash kernel splits the
    queries into blocks of 32 and computes a last block of 1-3 rows with another GEMM kernel, so a
    row's result would depend on how many positions its batch-mates pad it to. Here every query
    position goes through the same kernel whatever t is (t >= 4), so a request's text prefill is
    bit-identical alone and in a batch (docs/t3.md, "Determinism").
    """
    if k.shape[1] != q.shape[1]:  # grouped KV heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)  # [N, H, t, span]
    scores = scores.float().masked_fill(~visible, float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v  # [N, H, t, hd]


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

    def decode(self, x, cos, sin, rows, pos, visible, k_cache, v_cache):
        """x [N, t, D]; rows, pos [M, t] long (cache row, write position); visible [M, 1, t, span] bool;
        caches [M, Hkv, max_len, hd]. Rows of x past the M cache rows are padding (they only widen the
        matmuls, see T3Batch): they write and read no cache and their attention output is zero."""
        q, k, v = self._qkv(x, cos, sin)  # [N, H, t, hd]
        m, pad = k_cache.shape[0], x.shape[0] - k_cache.shape[0]
        q, k, v = q[:m], k[:m], v[:m]
        k_cache[rows, :, pos] = k.transpose(1, 2)  # [M, t, Hkv, hd] written at (row, :, position)
        v_cache[rows, :, pos] = v.transpose(1, 2)
        span = visible.shape[-1]
        k, v = k_cache[:, :, :span], v_cache[:, :, :span]  # [M, Hkv, span, hd]
        if x.shape[1] == 1:  # a decode tick
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=self.n_kv != self.n_heads)
        else:  # several positions per row (the text prefill): see masked_attention
            o = masked_attention(q, k, v, visible)
        if pad:
            o = torch.cat((o, o.new_zeros(pad, *o.shape[1:])))
        return self._out(o)  # [N, t, D]


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
        """x [N, t, D], row i at positions pos[i] ([N, t] long); cos/sin [N, 1, t, hd]; visible
        [N, 1, t, span] bool (which of the first `span` cache positions each query sees); caches:
        one [M, Hkv, max_len, hd] per layer (M <= N: rows past M are padding), written at pos, read
        over 0..span-1."""
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        m, t = k_caches[0].shape[0], pos.shape[1]
        pos, visible = pos[:m], visible[:m]
        rows = torch.arange(m, device=pos.device).unsqueeze(1).expand(m, t)  # [M, t]
        for layer, kc, vc in zip(self.layers, k_caches, v_caches):
            x = x + layer.self_attn.decode(layer.input_layernorm(x), cos, sin, rows, pos, visible, kc, vc)
            x = layer._mlp_residual(x)
        return self.norm(x)  # [N, t, D]
