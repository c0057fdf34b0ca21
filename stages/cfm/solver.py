"""Euler ODE solver with classifier-free guidance for the CFM stage; called by `stages.cfm.flow.Flow.solve`."""
from __future__ import annotations

import math

import torch
from torch import nn


def cosine_time_grid(n_timesteps: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """t_k = 1 - cos(k/n * pi/2), k = 0..n: small steps near the noise end, large near the data end.  [n+1]"""
    t = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)
    return 1 - torch.cos(t * 0.5 * math.pi)


def solve_euler_cfg(
    estimator: nn.Module,
    noise: torch.Tensor,  # [1, 80, F] x at t = 0
    mu: torch.Tensor,  # [1, 80, F]
    spks: torch.Tensor,  # [1, 80]
    cond: torch.Tensor,  # [1, 80, F]
    mask: torch.Tensor,  # [1, 1, F]
    n_timesteps: int,
    cfg_rate: float,
) -> torch.Tensor:
    """Integrate dx/dt = (1+r) v(x|mu,spks,cond) - r v(x|0,0,0) from t=0 to 1 on the cosine grid.

    The conditional and unconditional velocities come from ONE estimator call on a batch of 2
    (row 0 conditional, row 1 with mu, spks and cond zeroed; x, mask and t shared), as the reference does.
    Returns x at t = 1.  # [1, 80, F]
    """
    if n_timesteps < 1:
        raise ValueError(f"n_timesteps must be >= 1, got {n_timesteps}")
    t_grid = cosine_time_grid(n_timesteps, noise.dtype, noise.device)
    mu2 = torch.cat([mu, torch.zeros_like(mu)])  # [2, 80, F]
    spks2 = torch.cat([spks, torch.zeros_like(spks)])  # [2, 80]
    cond2 = torch.cat([cond, torch.zeros_like(cond)])  # [2, 80, F]
    mask2 = torch.cat([mask, mask])  # [2, 1, F]
    x = noise
    for k in range(n_timesteps):
        t, t_next = t_grid[k : k + 1], t_grid[k + 1 : k + 2]  # [1] each
        v = estimator(torch.cat([x, x]), mask2, mu2, t.expand(2), spks2, cond2)  # [2, 80, F]
        v_cond, v_uncond = v[:1], v[1:]
        x = x + (t_next - t) * ((1.0 + cfg_rate) * v_cond - cfg_rate * v_uncond)
    return x
