"""S3Tokenizer V2 (the 25 Hz speech tokenizer inside s3gen.safetensors `tokenizer.*`): 16 kHz audio -> speech tokens.

Reference: chatterbox/models/s3tokenizer/s3tokenizer.py over PyPI s3tokenizer's model_v2
(the CosyVoice2 tokenizer). Log-mel (128 bins, 100 fps) -> two stride-2 convs (25 Hz) ->
blocks of [LayerNorm, attention with rotary q/k plus an FSMN memory (depthwise conv over V),
LayerNorm, GELU MLP] -> FSQ: project to 8 dims, round(tanh(h) * 0.999) + 1 in {0, 1, 2},
read as base-3 digits -> one id in [0, 6561). Runs one utterance at a time (batch 1),
so there is no padding mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.voice.config import S3TokenizerConfig
from stages.voice.filters import slaney_mel_filters

SAMPLE_RATE = 16_000  # Hz
ROPE_DIM = 64  # the reference builds its rotary table for 64 dims whatever the head count
FSQ_SCALE = 0.9990000128746033  # float32(0.999): keeps tanh's output strictly inside the rounding range
FSQ_LEVELS = 3  # per-dimension levels {0, 1, 2}
FSQ_DIMS = 8  # 3^8 = 6561 codes
LOG_FLOOR = 1e-10  # power clamp before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below the loudest bin (80 dB)


def rope_table(positions: int, theta: float) -> torch.Tensor:
    """[positions, 64] complex64 rotations, both halves the same (the reference's precompute_freqs_cis)."""
    freqs = 1.0 / (theta ** (torch.arange(0, ROPE_DIM, 2)[: ROPE_DIM // 2].float() / ROPE_DIM))  # [32]
    angles = torch.outer(torch.arange(positions), freqs).float()  # [P, 32]
    cis = torch.polar(torch.ones_like(angles), angles)
    return torch.cat([cis, cis], dim=-1)  # [P, 64]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE: x [B, T, H, D], cos/sin [1, T, 1, D]."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class FSMNAttention(nn.Module):
    def __init__(self, width: int, heads: int, kernel: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.fsmn_block = nn.Conv1d(width, width, kernel, groups=width, bias=False)  # depthwise memory
        self.pad = ((kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.query(x).view(b, t, self.heads, -1)  # [B, T, H, Dh]
        k = self.key(x).view(b, t, self.heads, -1)
        v = self.value(x).view(b, t, self.heads, -1)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        memory = F.conv1d(F.pad(v.reshape(b, t, d).transpose(1, 2), self.pad), self.fsmn_block.weight,
                          groups=d).transpose(1, 2) + v.reshape(b, t, d)  # [B, T, D]
        scale = (d // self.heads) ** -0.25  # applied to q and k each (Whisper style)
        qk = (q.permute(0, 2, 1, 3) * scale) @ (k.permute(0, 2, 3, 1) * scale)  # [B, H, T, T]
        w = torch.softmax(qk.float(), dim=-1).to(q.dtype)
        wv = (w @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3).flatten(start_dim=2)  # [B, T, D]
        return self.out(wv) + memory


class Block(nn.Module):
    def __init__(self, width: int, heads: int, kernel: int):
        super().__init__()
        self.attn = FSMNAttention(width, heads, kernel)
        self.attn_ln = nn.LayerNorm(width)  # eps 1e-5 in PyPI s3tokenizer 0.3.0 (1e-6 in older sources)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.mlp_ln = nn.LayerNorm(width)  # eps 1e-5

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x), cos, sin)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.width, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.width, cfg.width, kernel_size=3, stride=2, padding=1)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.fsmn_kernel) for _ in range(cfg.layers))
        with torch.device("cpu"):  # constants are real even when the weights are built on the meta device
            rope = torch.view_as_real(rope_table(cfg.rope_positions, cfg.rope_theta))  # [P, 64, 2]
        self.register_buffer("rope_cos", rope[..., 0].contiguous(), persistent=False)  # [P, 64]
        self.register_buffer("rope_sin", rope[..., 1].contiguous(), persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [1, n_mels, T] -> hidden [1, ceil(ceil(T/2)/2), width]."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)  # [1, T/4, width]
        t = x.size(1)
        cos, sin = self.rope_cos[None, :t, None], self.rope_sin[None, :t, None]  # [1, T/4, 1, 64]
        for block in self.blocks:
            x = block(x, cos, sin)
        return x


class Codebook(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.project_down = nn.Linear(width, FSQ_DIMS)


class Quantizer(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self._codebook = Codebook(width)

    def forward(self, hidden: torch.Tensor, trace: dict | None = None) -> torch.Tensor:
        """hidden [1, T, width] -> ids [1, T] int64."""
        h = self._codebook.project_down(hidden).float()  # [1, T, 8]
        if trace is not None:
            trace["project_down_out"] = h[0]
        digits = (h.tanh() * FSQ_SCALE).round() + 1  # [1, T, 8] in {0, 1, 2}
        powers = FSQ_LEVELS ** torch.arange(FSQ_DIMS, device=h.device, dtype=h.dtype)  # [8]
        return (digits * powers).sum(dim=-1).long()


class S3Tokenizer(nn.Module):
    """Keys as in s3gen.safetensors without the `tokenizer.` prefix (encoder.*, quantizer.*, _mel_filters)."""

    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg)
        self.quantizer = Quantizer(cfg.width)
        with torch.device("cpu"):  # (see AudioEncoder); _mel_filters is replaced by the checkpoint's when loaded
            self.register_buffer("_mel_filters", slaney_mel_filters(SAMPLE_RATE, cfg.n_fft, cfg.n_mels).clone())  # [128, 201]
            self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [L] float32 at 16 kHz -> [1, n_mels, L // 160] Whisper-style log-mel."""
        wav = wav.to(self.window.device, torch.float32)
        if wav.numel() <= self.cfg.n_fft // 2:
            raise ValueError(f"need more than {self.cfg.n_fft // 2} samples at 16 kHz for the tokenizer, got {wav.numel()}")
        spec = torch.stft(wav[None], self.cfg.n_fft, self.cfg.hop, window=self.window, return_complex=True)
        power = spec[..., :-1].abs() ** 2  # [1, 201, L // 160]: the last frame is dropped
        log_spec = torch.clamp(self._mel_filters @ power, min=LOG_FLOOR).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
        return (log_spec + 4.0) / 4.0

    @torch.no_grad()
    def forward(self, wav: torch.Tensor, max_tokens: int | None = None, trace: dict | None = None) -> torch.Tensor:
        """wav [L] float32 at 16 kHz -> tokens [1, ceil(frames / 4)] int64; max_tokens cuts the mel to 4 x that first."""
        mel = self.log_mel(wav)
        if max_tokens is not None:
            mel = mel[..., : max_tokens * 4]  # 4 mel frames per token
        if mel.size(-1) > self.cfg.max_frames:
            raise ValueError(f"{mel.size(-1) / 100:.1f} s of audio is more than the tokenizer's "
                             f"{self.cfg.max_frames / 100:.0f} s window")
        if trace is not None:
            trace["log_mel"] = mel
        return self.quantizer(self.encoder(mel), trace)
