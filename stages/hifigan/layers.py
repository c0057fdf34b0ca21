"""Building blocks of the HiFT vocoder: weight-normed conv markers, Snake and the Snake ResBlock.

Weights are plain (weight norm is folded at load time, see checkpoint.py); the marker
subclasses only tell the checkpoint schema which weights are stored as (g, v) pairs.
"""
from __future__ import annotations

import torch
from torch import nn

SNAKE_EPS = 1e-9  # keeps 1/alpha finite for alpha = 0 (reference `no_div_by_zero`)


class WNConv1d(nn.Conv1d):
    """A Conv1d whose checkpoint weight is stored in weight-norm form (g [C_out,1,1], v)."""

    weight_normed = True


class WNConvTranspose1d(nn.ConvTranspose1d):
    """A ConvTranspose1d stored in weight-norm form; g is over dim 0 of [C_in, C_out, k], i.e. [C_in,1,1]."""

    weight_normed = True


def same_padding(kernel: int, dilation: int = 1) -> int:
    return (kernel - 1) * dilation // 2  # keeps the length for odd kernels


class Snake(nn.Module):
    """x + sin^2(alpha * x) / alpha, one trainable alpha per channel (linear scale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, T]
        alpha = self.alpha[None, :, None]  # [1, C, 1]
        return x + (1.0 / (alpha + SNAKE_EPS)) * torch.sin(x * alpha).pow(2)


class SnakeResBlock(nn.Module):
    """Three residual units: Snake -> dilated conv -> Snake -> conv, each added back to x."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            WNConv1d(channels, channels, kernel, dilation=d, padding=same_padding(kernel, d)) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            WNConv1d(channels, channels, kernel, padding=same_padding(kernel)) for _ in dilations
        )
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, T] -> [B, C, T]
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = x + c2(a2(c1(a1(x))))
        return x

    @staticmethod
    def reach(kernel: int, dilations: tuple[int, ...]) -> int:
        """Positions either side one output depends on: sum over units of (k-1)/2 * (d + 1)."""
        return sum(same_padding(kernel, d) + same_padding(kernel) for d in dilations)
