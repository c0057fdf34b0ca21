"""Harmonic-plus-noise excitation of the HiFT vocoder (reference: SineGen + SourceModuleHnNSF).

Pure function of (f0 per sample, start phases, standard-normal noise, phase carry): the
caller draws the randomness (from a per-request torch.Generator) so that the stage never
touches the global RNG and the golden tests can inject the reference's draws.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import HiFTConfig


class HarmonicSource(nn.Module):
    """9 sines at k*f0 (k = 1..9), gated by voicing, plus noise, merged by Linear(9 -> 1) + tanh."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.sampling_rate = cfg.sampling_rate
        self.sine_amp = cfg.nsf_alpha
        self.noise_std = cfg.nsf_sigma
        self.voiced_threshold = cfg.nsf_voiced_threshold
        self.n_harmonics = cfg.n_harmonics_total
        # 1..9 as float32: f0 * k / sr in fp32 exactly as the reference builds its F_mat.
        self.register_buffer("multiples", torch.arange(1, self.n_harmonics + 1, dtype=torch.float32), persistent=False)
        self.l_linear = nn.Linear(self.n_harmonics, 1)  # checkpoint key m_source.l_linear

    def voiced(self, f0: torch.Tensor) -> torch.Tensor:
        """1.0 where f0 > threshold else 0.0, same shape as f0 (float32)."""
        return (f0 > self.voiced_threshold).to(torch.float32)

    def cycles(self, f0: torch.Tensor, cycles0: torch.Tensor | None) -> torch.Tensor:
        """Fractional cycles of each harmonic after every sample: [B, S] -> [B, H, S] float64 in [0, 1).

        Accumulated in float64 so that splitting the signal into pieces (with `cycles0`
        = the last value of the previous piece) changes nothing beyond rounding.
        """
        inc = f0[:, None, :] * self.multiples[None, :, None] / self.sampling_rate  # [B, H, S] fp32
        cum = torch.cumsum(inc.double(), dim=-1)  # [B, H, S] float64
        if cycles0 is not None:
            cum = cum + cycles0.double()
        return torch.remainder(cum, 1.0)

    def forward(
        self,
        f0: torch.Tensor,  # [B, S] Hz, one value per output sample
        start_phase: torch.Tensor,  # [B, H, 1] U(-pi, pi); harmonic 0's entry is ignored (forced to 0)
        noise: torch.Tensor,  # [B, H, S] standard normal
        cycles0: torch.Tensor | None = None,  # [B, H, 1] carry from the previous piece, None at the start
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (source [B, 1, S], cycles_end [B, H, 1] float64)."""
        B, S = f0.shape
        if start_phase.shape != (B, self.n_harmonics, 1):
            raise ValueError(f"start_phase shape {tuple(start_phase.shape)}, expected {(B, self.n_harmonics, 1)}")
        if noise.shape != (B, self.n_harmonics, S):
            raise ValueError(f"noise shape {tuple(noise.shape)}, expected {(B, self.n_harmonics, S)}")
        frac = self.cycles(f0, cycles0)  # [B, H, S] float64
        if S:
            cycles_end = frac[:, :, -1:].clone()
        else:
            cycles_end = cycles0.double().clone() if cycles0 is not None else torch.zeros(B, self.n_harmonics, 1, dtype=torch.float64)
        phase = start_phase.to(torch.float32).clone()
        phase[:, 0] = 0.0  # the fundamental always starts at phase 0
        theta = 2 * math.pi * frac.to(torch.float32)  # [B, H, S]
        sines = self.sine_amp * torch.sin(theta + phase)  # [B, H, S]
        uv = self.voiced(f0)[:, None, :]  # [B, 1, S]
        noise_amp = uv * self.noise_std + (1 - uv) * (self.sine_amp / 3)  # unvoiced noise ~ sine amplitude
        excitation = sines * uv + noise_amp * noise  # [B, H, S]
        merged = torch.tanh(self.l_linear(excitation.transpose(1, 2)))  # [B, S, 1]
        return merged.transpose(1, 2), cycles_end  # [B, 1, S], [B, H, 1]
