"""The HiFT vocoder (reference: HiFTGenerator): 80-bin log-mel at 50 Hz -> 24 kHz audio.

Pure nn.Module used by the HiFiGAN stage (offline synthesis and the streaming vocoder).
Pipeline: mel -> f0 (F0Predictor) -> per-sample f0 (nearest x480) -> harmonic source
(HarmonicSource, randomness passed in) -> decode(mel, source): conv_pre, 3 upsampling
stages fused with the source's STFT, Snake ResBlocks, conv_post -> magnitude/phase -> iSTFT.

Receptive field (chatterbox and every preset with the same kernels; see receptive.py):
  decode: an output sample in mel frame m depends on mel frames m-14 .. m+14
          (14 frames left, 14 right) and output sample n on source samples n-6879 .. n+6875;
          a decode window (mel and source over the same frames) therefore needs 15 frames of
          context on each side of the frames it keeps (HiFTConfig.decode_window_context_frames);
  predict_f0: f0 frame m depends on mel frames m-5 .. m+5;
  the source depends on all earlier f0 through the phase carry (cycles0 / cycles_end).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import HiFTConfig
from .f0 import F0Predictor
from .layers import SnakeResBlock, WNConv1d, WNConvTranspose1d
from .source import HarmonicSource

CONV_PRE_KERNEL = 7  # conv_pre and conv_post are k=7, padding 3


class HiFT(nn.Module):
    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        n_stages = len(cfg.upsample_rates)
        stft_ch = cfg.istft_n_fft + 2  # real and imaginary parts of n_fft/2+1 bins
        self.m_source = HarmonicSource(cfg)
        self.conv_pre = WNConv1d(cfg.in_channels, cfg.base_channels, CONV_PRE_KERNEL, padding=CONV_PRE_KERNEL // 2)
        self.ups = nn.ModuleList(
            WNConvTranspose1d(cfg.base_channels // 2**i, cfg.base_channels // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        # The source STFT runs at the final rate; stage i needs it downsampled by the product of the later rates.
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, k in enumerate(cfg.source_resblock_kernel_sizes):
            ch = cfg.base_channels // 2 ** (i + 1)
            d = math.prod(cfg.upsample_rates[i + 1:])
            if d == 1:
                self.source_downs.append(nn.Conv1d(stft_ch, ch, 1))
            else:
                self.source_downs.append(nn.Conv1d(stft_ch, ch, 2 * d, d, padding=d // 2))
            self.source_resblocks.append(SnakeResBlock(ch, k, cfg.resblock_dilations))
        self.resblocks = nn.ModuleList(
            SnakeResBlock(cfg.base_channels // 2 ** (i + 1), k, cfg.resblock_dilations)
            for i in range(n_stages)
            for k in cfg.resblock_kernel_sizes
        )
        last_ch = cfg.base_channels // 2**n_stages
        self.conv_post = WNConv1d(last_ch, stft_ch, CONV_PRE_KERNEL, padding=CONV_PRE_KERNEL // 2)
        self.f0_predictor = F0Predictor(cfg)
        # Periodic Hann (scipy get_window("hann", n, fftbins=True)); not in the checkpoint.
        self.register_buffer("stft_window", torch.hann_window(cfg.istft_n_fft, periodic=True), persistent=False)

    # --- f0 and source ---------------------------------------------------------------
    def predict_f0(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, T] -> f0 [B, T] in Hz (float32).

        Computed in float64: the source phase is a running sum of f0 over every sample, so
        a 1e-7 rounding difference in f0 (which conv blocking produces whenever the input
        window changes length, as it does chunk by chunk) would grow to ~1e-4 in the audio.
        In float64 a streamed f0 rounds to exactly the whole-utterance float32 value. The
        predictor is small (5 convs at 50 frames/s), so the cost is negligible.
        """
        if self.f0_predictor.classifier.weight.dtype != torch.float64:
            self.f0_predictor.double()  # a float64 copy of a ~3 M-param (chatterbox) conv stack
        return self.f0_predictor(mel.double()).to(torch.float32)

    def upsample_f0(self, f0: torch.Tensor) -> torch.Tensor:
        """f0 [B, T] -> [B, T*480], each frame's value repeated (nearest)."""
        return f0.repeat_interleave(self.cfg.hop_samples, dim=-1)

    def voiced(self, f0_samples: torch.Tensor) -> torch.Tensor:
        """Voiced flag [B, S] (1.0 where f0 > 10 Hz) for per-sample f0 [B, S]."""
        return self.m_source.voiced(f0_samples)

    def source_from_f0(
        self,
        f0_samples: torch.Tensor,  # [B, S]
        start_phase: torch.Tensor,  # [B, 9, 1]
        noise: torch.Tensor,  # [B, 9, S]
        cycles0: torch.Tensor | None = None,  # [B, 9, 1] float64 carry, None at the start of a request
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (source [B, 1, S], cycles_end [B, 9, 1]); see HarmonicSource."""
        return self.m_source(f0_samples, start_phase, noise, cycles0)

    def draw_start_phase(self, generator: torch.Generator, batch: int = 1) -> torch.Tensor:
        """[B, 9, 1] ~ U(-pi, pi) from `generator` (harmonic 0's value is ignored by the source)."""
        h = self.cfg.n_harmonics_total
        return torch.rand(batch, h, 1, generator=generator, device=self.stft_window.device) * (2 * math.pi) - math.pi

    def draw_noise(self, n_samples: int, generator: torch.Generator, batch: int = 1) -> torch.Tensor:
        """[B, 9, S] ~ N(0, 1) from `generator`, drawn sample-major ([B, S, 9] then transposed).

        Sample-major order makes the draw chunkable: for B = 1, drawing whole mel frames
        (480 samples, 4320 values, a multiple of torch's 16-value normal block) piece by
        piece from one generator gives exactly the tensor drawn in one go, so a streamer
        and offline synthesis with the same seed produce the same source.
        """
        h = self.cfg.n_harmonics_total
        z = torch.randn(batch, n_samples, h, generator=generator, device=self.stft_window.device)  # [B, S, 9]
        return z.transpose(1, 2)  # [B, 9, S]

    def draw_source_randomness(self, n_samples: int, generator: torch.Generator, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(start_phase [B, 9, 1], noise [B, 9, S]) from `generator`, in that order."""
        phase = self.draw_start_phase(generator, batch)
        return phase, self.draw_noise(n_samples, generator, batch)

    # --- decode ----------------------------------------------------------------------
    def _source_stft(self, source: torch.Tensor) -> torch.Tensor:  # [B, 1, S] -> [B, n_fft+2, S/hop+1]
        c = self.cfg
        spec = torch.stft(source.squeeze(1), c.istft_n_fft, c.istft_hop, c.istft_n_fft, window=self.stft_window,
                          center=True, pad_mode="reflect", return_complex=True)  # [B, 9, F]
        return torch.cat([spec.real, spec.imag], dim=1)  # [B, 18, F]

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, T], source [B, 1, T*480] -> wav [B, T*480] in [-0.99, 0.99]. Deterministic."""
        c = self.cfg
        T = mel.shape[-1]
        if source.shape[-1] != T * c.hop_samples:
            raise ValueError(f"source has {source.shape[-1]} samples; {T} mel frames need {T * c.hop_samples}")
        s = self._source_stft(source)  # [B, 18, 120T+1]
        x = self.conv_pre(mel)  # [B, C0, T]
        n_k = len(c.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, c.lrelu_slope))  # [B, C_i, T * prod(rates[:i+1])]
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")  # [B, C, 120T+1]: align with the STFT frames
            x = x + self.source_resblocks[i](self.source_downs[i](s))
            acc = self.resblocks[i * n_k](x)
            for j in range(1, n_k):
                acc = acc + self.resblocks[i * n_k + j](x)
            x = acc / n_k
        x = self.conv_post(F.leaky_relu(x, c.post_lrelu_slope))  # [B, 18, 120T+1]
        nb = c.n_bins
        magnitude = torch.exp(x[:, :nb]).clamp(max=c.magnitude_limit)  # [B, 9, F]
        phase = torch.sin(x[:, nb:])  # [B, 9, F] (the reference's sin, redundant but kept for parity)
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        wav = torch.istft(spec, c.istft_n_fft, c.istft_hop, c.istft_n_fft, window=self.stft_window, center=True)
        return wav.clamp(-c.audio_limit, c.audio_limit)  # [B, T*480]

    # --- whole-utterance inference -------------------------------------------------
    def inference_given(self, mel: torch.Tensor, start_phase: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inference with explicit randomness: -> (wav [B, T*480], source [B, 1, T*480])."""
        f0 = self.upsample_f0(self.predict_f0(mel))  # [B, T*480]
        source, _ = self.source_from_f0(f0, start_phase, noise)
        return self.decode(mel, source), source

    def inference(self, mel: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, 80, T] -> (wav [B, T*480], source [B, 1, T*480]); randomness only from `generator`."""
        phase, noise = self.draw_source_randomness(mel.shape[-1] * self.cfg.hop_samples, generator, mel.shape[0])
        return self.inference_given(mel, phase, noise)
