"""The VoiceEncoder (T3's speaker embedding): trim, 40-band power mel, partial utterances, 3-layer LSTM.

Reference: chatterbox/models/voice_encoder (`embeds_from_wavs([wav], 16000)` as
`prepare_conditionals` calls it). The front end (trim and mel) follows librosa's numpy
arithmetic; it is written out here for the reason given in stages/voice/filters.py
(librosa's dependency weight) and checked against the golden `voice_encoder` case.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from stages.voice.config import VoiceEncoderConfig
from stages.voice.filters import slaney_mel_filters

TRIM_FRAME = 2048  # librosa.effects.trim frame_length (samples)
TRIM_HOP = 512  # librosa.effects.trim hop_length
TRIM_AMIN = 1e-10  # power floor of librosa's power_to_db (amin 1e-5 squared)


def trim_silence(wav: np.ndarray, top_db: float) -> tuple[int, int]:
    """librosa.effects.trim(wav, top_db=)'s index [start, end): frames quieter than top_db below the loudest are cut.

    RMS per 2048-sample frame (hop 512, zero-padded by 1024 each side), in float32 with
    numpy's reductions over the same strided layout as librosa, so the decisions match.
    """
    y = np.pad(np.asarray(wav, dtype=np.float32), (TRIM_FRAME // 2, TRIM_FRAME // 2))
    frames = np.lib.stride_tricks.sliding_window_view(y, TRIM_FRAME)[::TRIM_HOP].T  # [2048, n_frames] (a view)
    power = np.mean(np.square(frames, dtype=np.float32), axis=-2)  # [n_frames] mean square
    rms = np.sqrt(power)
    ref = np.max(rms)
    db = 10.0 * np.log10(np.maximum(TRIM_AMIN, np.square(rms)))
    db -= 10.0 * np.log10(np.maximum(TRIM_AMIN, ref ** 2))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0]) * TRIM_HOP, min(len(wav), (int(loud[-1]) + 1) * TRIM_HOP)


def power_mel(wav: np.ndarray, cfg: VoiceEncoderConfig) -> torch.Tensor:
    """wav [n] float32 at 16 kHz -> [1 + n // hop, n_mels] float32 power mel (no log), as the reference's melspectrogram.

    librosa.stft: reflect padding of n_fft/2, periodic Hann window, the windowed frames and
    their FFT in float64 (numpy's), the spectrum rounded to complex64; then numpy's float32
    |X|^2 and mel product, as librosa computes them.
    """
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    pad = cfg.n_fft // 2
    if x.numel() <= pad:
        raise ValueError(f"need more than {pad} samples for the voice encoder's reflect padding, got {x.numel()}")
    x = torch.nn.functional.pad(x[None, None], (pad, pad), mode="reflect")[0, 0]  # [n + n_fft]
    frames = x.unfold(0, cfg.n_fft, cfg.hop).double()  # [T, n_fft]
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float64)
    spec = torch.fft.rfft(frames * window, dim=-1).to(torch.complex64).numpy().T  # [bins, T]
    power = np.abs(spec) ** 2  # float32 (numpy's hypot: closer to librosa than torch's complex abs)
    basis = slaney_mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, 0.0, cfg.fmax).numpy()  # [n_mels, bins]
    return torch.from_numpy(np.ascontiguousarray(np.dot(basis, power).T))  # [T, n_mels]


def partial_windows(n_frames: int, cfg: VoiceEncoderConfig) -> tuple[int, int]:
    """(number of partials, frames they span) for an utterance of n_frames (reference get_num_wins)."""
    win, step = cfg.partial_frames, cfg.frame_step
    n_wins, rem = divmod(max(n_frames - win + step, 0), step)
    if n_wins == 0 or (rem + (win - step)) / win >= cfg.min_coverage:
        n_wins += 1
    return n_wins, win + step * (n_wins - 1)


class VoiceEncoder(nn.Module):
    """3-layer LSTM over 160-frame partials -> Linear -> ReLU -> L2; keys as in ve.safetensors."""

    def __init__(self, cfg: VoiceEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_mels, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True)
        self.proj = nn.Linear(cfg.hidden_size, cfg.embed_size)
        # training-time cosine-similarity scale, stored in the checkpoint, unused at inference
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, partials: torch.Tensor) -> torch.Tensor:
        """partials [B, partial_frames, n_mels] -> [B, embed_size] L2-normalised partial embeddings."""
        _, (hidden, _) = self.lstm(partials)  # hidden [layers, B, H]
        raw = torch.relu(self.proj(hidden[-1]))  # [B, E]
        return raw / torch.linalg.norm(raw, dim=1, keepdim=True)

    @torch.no_grad()
    def embed(self, wav: np.ndarray, trace: dict | None = None) -> torch.Tensor:
        """wav [n] float32 at 16 kHz -> speaker embedding [1, embed_size] (reference embeds_from_wavs + mean)."""
        cfg = self.cfg
        start, end = trim_silence(wav, cfg.trim_top_db)
        mel = power_mel(np.asarray(wav)[start:end], cfg)  # [T, n_mels]
        n_partials, span = partial_windows(mel.size(0), cfg)
        padded = torch.cat([mel, mel.new_zeros(max(0, span - mel.size(0)), cfg.n_mels)])  # zero-pad the last partial
        step = cfg.frame_step
        partials = torch.stack([padded[i * step: i * step + cfg.partial_frames] for i in range(n_partials)])  # [n, 160, M]
        device = self.proj.weight.device
        n_chunks = math.ceil(n_partials / cfg.batch_size)
        embeds = torch.cat([self(b.to(device)) for b in partials.chunk(n_chunks)]).cpu()  # [n, E]
        raw = embeds.mean(dim=0, keepdim=True)  # [1, E]
        speaker = raw / torch.linalg.norm(raw, dim=1, keepdim=True)
        if trace is not None:
            trace.update(trim_interval=torch.tensor([start, end]), mel=mel, partials=partials, partial_embeds=embeds)
        return speaker
