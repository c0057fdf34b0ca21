"""The GPT-2 backbone of Chatterbox Turbo's T3: pre-LN blocks, fused QKV, gelu_new, learned positions.

Pure modules; parameter names match the `tfmr.*` keys of `t3_turbo_v1.safetensors` (HF `GPT2Model`):
projections are HF `Conv1D`s whose weights are stored (in, out), so y = x @ W + b. GPT-2's own
token table `tfmr.wte` is in the file but never used (inputs are embeddings); it is checked at
load time and not kept. The learned position table `wpe` covers the whole stream: positions run
0..L-1 over the prefill and continue through the KV cache.

Same calling convention as the Llama backbone (stages/t3/llama.py) minus the rotary tables:
`prefill` (causal attention over the prompt, K/V written at 0..T-1) and `decode` (one token per
row, static shapes, K/V written by index, attention over the whole cache under a position mask).
`decode` takes one write position per row, so a batched tick can advance rows of different
requests, each at its own position, in one call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.t3.llama import masked_attention
from stages.t3.turbo_config import TurboT3Config


class Conv1D(nn.Module):
    """HF `Conv1D`: a linear layer whose weight is stored transposed, [in, out]."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in] -> [..., out], as addmm(bias, x, W) like the reference."""
        out_shape = x.shape[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(out_shape)


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh approximation of GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return F.gelu(x, approximate="tanh")


class GPT2Attention(nn.Module):
    def __init__(self, cfg: TurboT3Config):
        super().__init__()
        self.n_heads, self.hd, self.dim = cfg.num_heads, cfg.head_dim, cfg.hidden_size
        self.c_attn = Conv1D(self.dim, 3 * self.dim)  # q | k | v along the output
        self.c_proj = Conv1D(self.dim, self.dim)

    def _qkv(self, x: torch.Tensor):
        b, t, _ = x.shape
        q, k, v = self.c_attn(x).split(self.dim, dim=-1)  # 3 x [B, T, D]
        return tuple(y.view(b, t, self.n_heads, self.hd).transpose(1, 2) for y in (q, k, v))  # [B, H, T, hd]

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        return self.c_proj(o.transpose(1, 2).reshape(b, t, self.dim))  # [B, T, D]

    def prefill(self, x, k_cache, v_cache):
        """x [B, T, D]; caches [B, H, max_len, hd] (written at 0..T-1). Scale 1/sqrt(hd), causal."""
        q, k, v = self._qkv(x)
        t = x.shape[1]
        k_cache[:, :, :t].copy_(k)
        v_cache[:, :, :t].copy_(v)
        return self._out(F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def decode(self, x, pos, visible, k_cache, v_cache):
        """x [B, 1, D]; pos [B] (or [1], shared) long write index; visible [B or 1, 1, 1, max_len] bool."""
        q, k, v = self._qkv(x)  # [B, H, 1, hd]
        index = pos.view(-1, 1, 1, 1).expand(k.shape)  # [B, H, 1, hd]: row b writes at pos[b]
        k_cache.scatter_(2, index, k)
        v_cache.scatter_(2, index, v)
        o = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=visible)  # [B, H, 1, hd]
        return self._out(o)

    def tick(self, x, rows, pos, visible, k_cache, v_cache):
        """The batched tick's call (stages/t3/turbo_tick.py): x [N, t, D]; rows, pos [M, t] long (cache row,
        write position); visible [M, 1, t, span] bool; caches [M, H, max_len, hd]. Rows of x past the M
        cache rows are padding: they write and read no cache and their attention output is zero."""
        q, k, v = self._qkv(x)  # [N, H, t, hd]
        m, pad = k_cache.shape[0], x.shape[0] - k_cache.shape[0]
        q, k, v = q[:m], k[:m], v[:m]
        k_cache[rows, :, pos] = k.transpose(1, 2)  # [M, t, H, hd] written at (row, :, position)
        v_cache[rows, :, pos] = v.transpose(1, 2)
        span = visible.shape[-1]
        k, v = k_cache[:, :, :span], v_cache[:, :, :span]  # [M, H, span, hd]
        if x.shape[1] == 1:  # a decode tick
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        else:  # several positions per row (the text prefill): plain matmuls, the same kernel at every t
            o = masked_attention(q, k, v, visible)
        if pad:
            o = torch.cat((o, o.new_zeros(pad, *o.shape[1:])))
        return self._out(o)  # [N, t, D]


class GPT2MLP(nn.Module):
    def __init__(self, cfg: TurboT3Config):
        super().__init__()
        self.c_fc = Conv1D(cfg.hidden_size, cfg.intermediate_size)
        self.c_proj = Conv1D(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(gelu_new(self.c_fc(x)))


class GPT2Block(nn.Module):
    """Pre-LN: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: TurboT3Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = GPT2MLP(cfg)

    def prefill(self, x, k_cache, v_cache):
        x = x + self.attn.prefill(self.ln_1(x), k_cache, v_cache)
        return x + self.mlp(self.ln_2(x))

    def decode(self, x, pos, visible, k_cache, v_cache):
        x = x + self.attn.decode(self.ln_1(x), pos, visible, k_cache, v_cache)
        return x + self.mlp(self.ln_2(x))


class GPT2Backbone(nn.Module):
    """`tfmr` in the checkpoint (without the unused `wte`). Returns the hidden state after `ln_f`."""

    def __init__(self, cfg: TurboT3Config):
        super().__init__()
        self.wpe = nn.Embedding(cfg.n_positions, cfg.hidden_size)
        self.h = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def prefill(self, x, k_caches, v_caches):
        """x [B, T, D] input embeddings at positions 0..T-1; caches: one [B, H, max_len, hd] per layer."""
        x = x + self.wpe(torch.arange(x.shape[1], device=x.device))  # [B, T, D]
        for block, kc, vc in zip(self.h, k_caches, v_caches):
            x = block.prefill(x, kc, vc)
        return self.ln_f(x)  # [B, T, D]

    def tick(self, x, pos, visible, k_caches, v_caches):
        """x [N, t, D], row i at positions pos[i] ([N, t] long); visible [N, 1, t, span] bool; caches:
        one [M, H, max_len, hd] per layer (M <= N: rows past M are padding), written at pos, read over
        0..span-1. The `TickModel.forward` convention (stages/t3/tick_model.py)."""
        x = x + self.wpe(pos)  # [N, t, D]: GPT-2's learned position at every cache position
        m, t = k_caches[0].shape[0], pos.shape[1]
        rows = torch.arange(m, device=pos.device).unsqueeze(1).expand(m, t)  # [M, t]
        pos, visible = pos[:m], visible[:m]
        for block, kc, vc in zip(self.h, k_caches, v_caches):
            x = x + block.attn.tick(block.ln_1(x), rows, pos, visible, kc, vc)
            x = x + block.mlp(block.ln_2(x))
        return self.ln_f(x)  # [N, t, D]

    def decode(self, x, pos, visible, k_caches, v_caches):
        """x [B, 1, D] at positions `pos` [B] (one per row; [1] = shared); see GPT2Attention.decode."""
        x = x + self.wpe(pos).unsqueeze(1)  # [B, 1, D]
        for block, kc, vc in zip(self.h, k_caches, v_caches):
            x = block.decode(x, pos, visible, kc, vc)
        return self.ln_f(x)  # [B, 1, D]
