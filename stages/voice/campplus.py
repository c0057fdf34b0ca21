"""CAMPPlus: the 192-d x-vector of the flow (s3gen.safetensors `speaker_encoder.*`), from Kaldi fbank features.

Reference: chatterbox/models/s3gen/xvector.py (3D-Speaker's CAM++), eval mode (BatchNorm on
its running statistics). Module and attribute names follow the checkpoint's keys.

  fbank - mean [1, T, 80] -> FCM 2-D head (res-blocks, stride 2 on frequency) [1, m*10, T]
  -> TDNN k5 s2 [1, init, T/2] -> 3 x (CAM-dense block, transit halving the channels)
  -> BN-ReLU -> stats pool (mean | unbiased std) -> 1x1 conv -> BN(affine=False) -> [1, 192]
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from stages.voice.config import CAMPPlusConfig


def bn_relu(channels: int) -> nn.Sequential:
    """The reference's `get_nonlinear("batchnorm-relu")` (keys `<name>.batchnorm.*`)."""
    return nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(channels), relu=nn.ReLU()))


class BasicResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class FCM(nn.Module):
    """2-D convolutional front end over (frequency, time); frequency 80 -> 10 rows."""

    def __init__(self, m: int, feat_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, m, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        self.layer1 = nn.Sequential(BasicResBlock(m, m, 2), BasicResBlock(m, m, 1))
        self.layer2 = nn.Sequential(BasicResBlock(m, m, 2), BasicResBlock(m, m, 1))
        self.conv2 = nn.Conv2d(m, m, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, F, T] -> [B, m * F/8, T]."""
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))  # [B, m, F, T]
        out = F.relu(self.bn2(self.conv2(self.layer2(self.layer1(out)))))  # [B, m, F/8, T]
        return out.reshape(out.size(0), -1, out.size(-1))


class TDNNLayer(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 5, stride=2, padding=2, bias=False)  # T -> ceil(T/2)
        self.nonlinear = bn_relu(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """A k3 conv gated per channel by the utterance mean plus the 100-frame segment mean."""

    def __init__(self, bn_channels: int, out: int, dilation: int, seg_len: int):
        super().__init__()
        self.linear_local = nn.Conv1d(bn_channels, out, 3, padding=dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // 2, 1)
        self.linear2 = nn.Conv1d(bn_channels // 2, out, 1)
        self.seg_len = seg_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)  # [B, out, T]
        t = x.size(-1)
        seg = F.avg_pool1d(x, self.seg_len, self.seg_len, ceil_mode=True)  # [B, C, ceil(T/100)]: partial last segment
        seg = seg.unsqueeze(-1).expand(*seg.shape, self.seg_len).reshape(*seg.shape[:-1], -1)[..., :t]  # [B, C, T]
        context = x.mean(-1, keepdim=True) + seg
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return y * gate


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_channels: int, dilation: int, seg_len: int):
        super().__init__()
        self.nonlinear1 = bn_relu(cin)
        self.linear1 = nn.Conv1d(cin, bn_channels, 1, bias=False)
        self.nonlinear2 = bn_relu(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, growth, dilation, seg_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.ModuleDict):
    """Dense block: each layer's `growth` new channels are concatenated to its input (keys tdnnd1..N)."""

    def __init__(self, layers: int, cin: int, growth: int, bn_channels: int, dilation: int, seg_len: int):
        super().__init__({f"tdnnd{i + 1}": CAMDenseTDNNLayer(cin + i * growth, growth, bn_channels, dilation, seg_len)
                          for i in range(layers)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.values():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.nonlinear = bn_relu(cin)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(cout, affine=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C] -> [B, cout]."""
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class XVector(nn.Module):
    def __init__(self, cfg: CAMPPlusConfig):
        super().__init__()
        self.tdnn = TDNNLayer(cfg.head_out, cfg.init_channels)
        c = cfg.init_channels
        self.blocks = []
        for i, (layers, dilation) in enumerate(zip(cfg.block_layers, cfg.block_dilations), 1):
            setattr(self, f"block{i}", CAMDenseTDNNBlock(layers, c, cfg.growth_rate, cfg.bn_size * cfg.growth_rate,
                                                        dilation, cfg.seg_len))
            c += layers * cfg.growth_rate
            setattr(self, f"transit{i}", TransitLayer(c, c // 2))
            c //= 2
            self.blocks.append(i)
        self.out_nonlinear = bn_relu(c)
        self.dense = DenseLayer(2 * c, cfg.embed_size)

    def forward(self, x: torch.Tensor, trace: dict | None = None) -> torch.Tensor:
        """x [B, head_out, T] -> x-vector [B, embed_size]."""
        x = self.tdnn(x)  # [B, init, ceil(T/2)]
        if trace is not None:
            trace["tdnn_out"] = x
        for i in self.blocks:
            x = getattr(self, f"transit{i}")(getattr(self, f"block{i}")(x))
            if trace is not None:
                trace[f"transit{i}_out"] = x
        x = self.out_nonlinear(x)
        stats = torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)  # [B, 2C]
        if trace is not None:
            trace["stats_out"] = stats
        return self.dense(stats)


class CAMPPlus(nn.Module):
    def __init__(self, cfg: CAMPPlusConfig):
        super().__init__()
        self.cfg = cfg
        self.head = FCM(cfg.m_channels, cfg.feat_dim)
        self.xvector = XVector(cfg)

    @torch.no_grad()
    def forward(self, feats: torch.Tensor, trace: dict | None = None) -> torch.Tensor:
        """feats [B, T, 80] (mean-normalised fbank) -> x-vector [B, embed_size] (not normalised)."""
        if feats.size(1) < 3:
            raise ValueError(f"CAMPPlus needs at least 3 fbank frames (40 ms at 16 kHz), got {feats.size(1)}")
        x = self.head(feats.permute(0, 2, 1))  # [B, head_out, T]
        if trace is not None:
            trace["head_out"] = x
        return self.xvector(x, trace)
