"""F0 predictor of the HiFT vocoder (reference: ConvRNNF0Predictor): mel [B,80,T] -> f0 in Hz [B,T]."""
from __future__ import annotations

import torch
from torch import nn

from .config import HiFTConfig
from .layers import WNConv1d

F0_KERNEL = 3  # every condnet conv is k=3, padding 1 (one frame of context per side per layer)


class F0Predictor(nn.Module):
    """num_convs x (conv k=3 + ELU), then Linear(C -> 1) and abs (f0 is non-negative)."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        for _ in range(cfg.f0_num_convs):
            # Sequential indices 0, 2, 4, ... are the convs: the checkpoint's condnet.{0,2,4,6,8}.
            layers += [WNConv1d(c_in, cfg.f0_cond_channels, F0_KERNEL, padding=F0_KERNEL // 2), nn.ELU()]
            c_in = cfg.f0_cond_channels
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg.f0_cond_channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # mel: [B, 80, T]
        h = self.condnet(mel).transpose(1, 2)  # [B, T, C]
        return self.classifier(h).squeeze(-1).abs()  # [B, T]
