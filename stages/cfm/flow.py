"""The S3Gen flow (reference `CausalMaskedDiffWithXvec` + `CausalConditionalCFM`): speech tokens -> 80-bin log-mel at 50 Hz.

Pure model code, driven by the CFM stage's streaming logic and by the single-process path.
Child names mirror the checkpoint (`flow.input_embedding`, `flow.encoder`, `flow.decoder.estimator`, ...)
so `flow.*` of s3gen.safetensors loads with only the `flow.` prefix stripped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.cfm.conds import FlowConditionals
from stages.cfm.config import CFMConfig
from stages.cfm.encoder import UpsampleConformerEncoder
from stages.cfm.estimator import ConditionalDecoder
from stages.cfm.noise import NoiseSource
from stages.cfm.solver import cfg_euler_step, cfg_pair, cosine_time_grid, solve_euler_cfg


class _Decoder(nn.Module):
    """Holds the estimator under the checkpoint's `decoder.estimator` name."""

    def __init__(self, cfg: CFMConfig):
        super().__init__()
        self.estimator = ConditionalDecoder(cfg)


class Flow(nn.Module):
    def __init__(self, cfg: CFMConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.n_mels)
        self.encoder = UpsampleConformerEncoder(cfg)
        self.encoder_proj = nn.Linear(cfg.encoder_dim, cfg.n_mels)
        self.decoder = _Decoder(cfg)

    @property
    def estimator(self) -> ConditionalDecoder:
        return self.decoder.estimator

    @property
    def _dtype(self) -> torch.dtype:
        return self.encoder_proj.weight.dtype

    @property
    def _device(self) -> torch.device:
        return self.encoder_proj.weight.device

    # --- the three steps -------------------------------------------------------------
    @torch.no_grad()
    def embed_speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """Raw x-vector [1, 192] -> spks [1, 80] (L2-normalised, then the affine layer)."""
        if embedding.ndim != 2 or embedding.size(1) != self.cfg.spk_embed_dim:
            raise ValueError(f"embedding must be [B, {self.cfg.spk_embed_dim}], got {list(embedding.shape)}")
        emb = F.normalize(embedding.to(self._device, self._dtype), dim=1)
        return self.spk_embed_affine_layer(emb)  # [B, 80]

    @torch.no_grad()
    def encode(self, tokens: torch.Tensor, finalize: bool) -> torch.Tensor:
        """All tokens so far (prompt + speech) [1, T] -> mu [1, 80, F], F = 2T, or 2T-6 when not finalize.

        finalize=False drops the last pre_lookahead_len * token_mel_ratio frames: they saw zero
        padding instead of real lookahead tokens and will change once more tokens arrive.
        """
        if tokens.ndim != 2 or tokens.size(0) != 1:
            raise ValueError(f"tokens must be [1, T], got {list(tokens.shape)}")
        if tokens.is_floating_point():
            raise ValueError(f"tokens must be integer ids, got {tokens.dtype}")
        n_frames = self.cfg.mel_frames(tokens.size(1), finalize)
        if n_frames == 0:
            return torch.zeros(1, self.cfg.n_mels, 0, device=self._device, dtype=self._dtype)
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab_size:
            raise ValueError(f"speech token ids must lie in [0, {self.cfg.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]")
        x = self.input_embedding(tokens.to(self._device).long())  # [1, T, input_size]
        h = self.encoder(x)[:, :n_frames]  # [1, F, encoder_dim]
        return self.encoder_proj(h).transpose(1, 2).contiguous()  # [1, 80, F]

    @torch.no_grad()
    def solve(
        self,
        mu: torch.Tensor,  # [1, 80, F]
        spks: torch.Tensor,  # [1, 80]
        cond: torch.Tensor,  # [1, 80, F]
        noise: torch.Tensor,  # [1, 80, F]
        n_timesteps: int | None = None,
        cfg_rate: float | None = None,
    ) -> torch.Tensor:
        """10-step cosine Euler with CFG from `noise` to the mel [1, 80, F] (mask all ones)."""
        n_timesteps = self.cfg.n_timesteps if n_timesteps is None else n_timesteps
        cfg_rate = self.cfg.cfg_rate if cfg_rate is None else cfg_rate
        n = self.cfg.n_mels
        frames = mu.size(-1)
        for name, t, shape in (("mu", mu, (1, n, frames)), ("cond", cond, (1, n, frames)), ("noise", noise, (1, n, frames)), ("spks", spks, (1, n))):
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
        dev, dt = self._device, self._dtype
        mu, spks, cond, noise = (t.to(dev, dt) for t in (mu, spks, cond, noise))
        if frames == 0:
            return noise.clone()
        mask = torch.ones(1, 1, frames, device=dev, dtype=dt)  # [1, 1, F]
        return self._integrate(noise, mu, spks, cond, mask, n_timesteps, cfg_rate)

    def _integrate(self, noise, mu, spks, cond, mask, n_timesteps: int, cfg_rate: float) -> torch.Tensor:
        """The ODE solve from noise to mel (here cosine Euler with CFG; MeanflowFlow overrides it)."""
        return solve_euler_cfg(self.estimator, noise, mu, spks, cond, mask, n_timesteps, cfg_rate)

    # --- the same solver one step at a time, for rows at their own times (the CFM stage's running batch) --------
    def time_grid(self, n_timesteps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The solver's times t_0 = 0 .. t_n = 1.  # [n + 1]"""
        return cosine_time_grid(n_timesteps, dtype, device)

    def step_inputs(self, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> tuple:
        """What every step of rows [B] reads besides x (here the CFG pair: conditional rows, then zeroed ones)."""
        return cfg_pair(mu, spks, cond, mask)

    @torch.no_grad()
    def step(self, x: torch.Tensor, inputs: tuple, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """One solver step of rows x [B, 80, L], each from its time t [B] to t_next [B] (`_integrate` takes the same steps)."""
        return cfg_euler_step(self.estimator, x, *inputs, t, t_next, self.cfg.cfg_rate)

    def prompt_cond(self, prompt_feat: torch.Tensor, frames: int) -> torch.Tensor:
        """The estimator's `cond`: the prompt mel [1, 2P, 80] in the first 2P frames, zeros after.  # [1, 80, frames]"""
        cond = torch.zeros(1, self.cfg.n_mels, frames, device=self._device, dtype=self._dtype)
        head = prompt_feat[:, :frames].to(self._device, self._dtype).transpose(1, 2)  # [1, 80, min(2P, frames)]
        cond[:, :, : head.size(-1)] = head
        return cond

    # --- whole utterance -------------------------------------------------------------
    @torch.no_grad()
    def infer(
        self,
        speech_tokens: torch.Tensor,  # [1, N]
        conds: FlowConditionals,
        noise: NoiseSource | torch.Tensor,
        finalize: bool = True,
        n_timesteps: int | None = None,
    ) -> torch.Tensor:
        """The reference's flow.inference on the whole utterance -> mel of the generated frames [1, 80, 2N (- 6)].

        noise: a NoiseSource (frames 0..F-1 of the prompt+generated timeline are used) or a
        tensor [1, 80, F] over the same F = 2(P+N) (- 6) frames.
        """
        if speech_tokens.ndim != 2 or speech_tokens.size(0) != 1:
            raise ValueError(f"speech_tokens must be [1, N], got {list(speech_tokens.shape)}")
        n = self.cfg.n_mels
        p_frames = conds.n_prompt_frames
        if conds.prompt_token.ndim != 2 or tuple(conds.prompt_feat.shape) != (1, self.cfg.token_mel_ratio * conds.n_prompt_tokens, n):
            raise ValueError(f"conds: prompt_feat {list(conds.prompt_feat.shape)} does not match prompt_token {list(conds.prompt_token.shape)}")
        tokens = torch.cat([conds.prompt_token.to(self._device).long(), speech_tokens.to(self._device).long()], dim=1)  # [1, P+N]
        frames = self.cfg.mel_frames(tokens.size(1), finalize)  # F
        if frames <= p_frames:  # nothing generated yet (N = 0, or too few tokens to pass the lookahead)
            return torch.zeros(1, n, 0, device=self._device, dtype=self._dtype)
        if isinstance(noise, NoiseSource):
            z = noise.frames(0, frames).unsqueeze(0)  # [1, 80, F]
        else:
            z = noise
        mu = self.encode(tokens, finalize)  # [1, 80, F]
        spks = self.embed_speaker(conds.embedding)  # [1, 80]
        cond = self.prompt_cond(conds.prompt_feat, frames)  # [1, 80, F]
        mel = self.solve(mu, spks, cond, z, n_timesteps)  # [1, 80, F]
        return mel[:, :, p_frames:].contiguous()  # [1, 80, F - 2P]
