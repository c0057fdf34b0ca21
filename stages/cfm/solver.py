"""Euler ODE solver with classifier-free guidance for the CFM stage: `Flow.solve` (whole calls) and the stage's running batch (stages/cfm/batch.py) take the same step."""
from __future__ import annotations

import math

import torch
from torch import nn


def cosine_time_grid(n_timesteps: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """t_k = 1 - cos(k/n * pi/2), k = 0..n: small steps near the noise end, large near the data end.  [n+1]"""
    t = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)
    return 1 - torch.cos(t * 0.5 * math.pi)


def cfg_euler_step(
    estimator: nn.Module,
    x: torch.Tensor,  # [B, 80, L] x at t
    mask2: torch.Tensor,  # [2B, 1, L] 1 = real frame (the conditional rows, then the same again)
    mu2: torch.Tensor,  # [2B, 80, L] mu, then zeros
    spks2: torch.Tensor,  # [2B, 80] spks, then zeros
    cond2: torch.Tensor,  # [2B, 80, L] cond, then zeros
    t: torch.Tensor,  # [B] each row's time
    t_next: torch.Tensor,  # [B] each row's next time on its grid
    cfg_rate: float,
) -> torch.Tensor:
    """One Euler step with classifier-free guidance for B independent rows: x at t_next.  # [B, 80, L]

    The conditional and unconditional velocities of all rows come from ONE estimator call on
    2B rows (rows 0..B-1 conditional, rows B..2B-1 the same x with mu, spks and cond zeroed),
    as the reference does for B = 1. Rows may sit at different times (t is per row).
    """
    b = x.size(0)
    v = estimator(torch.cat([x, x]), mask2, mu2, torch.cat([t, t]), spks2, cond2)  # [2B, 80, L]
    v_cond, v_uncond = v[:b], v[b:]
    dt = (t_next - t).view(b, 1, 1)  # [B, 1, 1]
    return x + dt * ((1.0 + cfg_rate) * v_cond - cfg_rate * v_uncond)


def cfg_pair(mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The estimator inputs of the CFG pair: (mask2, mu2, spks2, cond2), conditional rows first, zeros for the unconditional."""
    return (torch.cat([mask, mask]), torch.cat([mu, torch.zeros_like(mu)]), torch.cat([spks, torch.zeros_like(spks)]),
            torch.cat([cond, torch.zeros_like(cond)]))


def solve_euler_cfg(
    estimator: nn.Module,
    noise: torch.Tensor,  # [B, 80, F] x at t = 0
    mu: torch.Tensor,  # [B, 80, F]
    spks: torch.Tensor,  # [B, 80]
    cond: torch.Tensor,  # [B, 80, F]
    mask: torch.Tensor,  # [B, 1, F]
    n_timesteps: int,
    cfg_rate: float,
) -> torch.Tensor:
    """Integrate dx/dt = (1+r) v(x|mu,spks,cond) - r v(x|0,0,0) from t=0 to 1 on the cosine grid.

    Every step is `cfg_euler_step` (the step the CFM stage's running batch takes too).
    Returns x at t = 1.  # [B, 80, F]
    """
    if n_timesteps < 1:
        raise ValueError(f"n_timesteps must be >= 1, got {n_timesteps}")
    t_grid = cosine_time_grid(n_timesteps, noise.dtype, noise.device)
    mask2, mu2, spks2, cond2 = cfg_pair(mu, spks, cond, mask)
    b = noise.size(0)
    x = noise
    for k in range(n_timesteps):
        t, t_next = t_grid[k : k + 1].expand(b), t_grid[k + 1 : k + 2].expand(b)  # [B] each
        x = cfg_euler_step(estimator, x, mask2, mu2, spks2, cond2, t, t_next, cfg_rate)
    return x
