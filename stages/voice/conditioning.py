"""A voice from a recording: the reference's `ChatterboxTTS.prepare_conditionals`, step for step.

    wav24  = the recording at 24 kHz (soxr_hq unless it already is 24 kHz)
    ref16  = soxr_hq(wav24 -> 16 kHz)            on the FULL signal
    wav24  = wav24[:10 s]
    S3Gen embed_ref(wav24):  prompt_feat = 24 kHz log-mel [1, F, 80] (F = n // 480)
                             wav16 = torchaudio sinc resampling of wav24 (a second, different 16 kHz signal)
                             embedding = CAMPPlus(fbank(wav16))          [1, 192]
                             prompt_token = S3Tokenizer(wav16)           [1, ceil(F/2)], cut to F // 2 if F != 2T
    T3 prompt:   S3Tokenizer(ref16[:6 s], max 150 tokens)                [1, <= 150]
                 (Turbo: ref16[:15 s], max 375 tokens, after a gain of wav24 to -27 LUFS; VoiceConfig TURBO)
    T3 speaker:  VoiceEncoder(ref16) (trimmed, partials, mean, L2)       [1, 256]
    emotion_adv = exaggeration                                           [1, 1, 1]

The result is a `VoiceConditionals` (stages/voice/conds.py). Pure computation: no files
besides the input, no sockets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.hifigan.mel import mel_spectrogram
from stages.voice.audio import ReferenceAudio, VoiceInputError, read_reference, reference_from_array
from stages.voice.campplus import CAMPPlus
from stages.voice.conds import TOKEN_MEL_RATIO, VoiceConditionals
from stages.voice.config import VoiceConfig
from stages.voice.fbank import campplus_features
from stages.voice.loudness import normalise_loudness
from stages.voice.resample import SincResampler, soxr_hq
from stages.voice.s3_tokenizer import S3Tokenizer
from stages.voice.voice_encoder import VoiceEncoder

@dataclass
class VoiceModels:
    """The three conditioning models of one checkpoint (or the built-in random ones) and their config."""

    cfg: VoiceConfig
    voice_encoder: VoiceEncoder
    tokenizer: S3Tokenizer
    campplus: CAMPPlus

    def to(self, device: torch.device | str) -> "VoiceModels":
        for m in (self.voice_encoder, self.tokenizer, self.campplus):
            m.to(device)
        return self


def check_exaggeration(exaggeration: float) -> float:
    if isinstance(exaggeration, bool) or not isinstance(exaggeration, (int, float)) or not math.isfinite(exaggeration) \
            or exaggeration < 0:
        raise VoiceInputError(f"exaggeration must be a finite number >= 0, got {exaggeration!r}")
    return float(exaggeration)


@torch.no_grad()
def compute_conditionals(models: VoiceModels, audio: ReferenceAudio, exaggeration: float = 0.5,
                         prompt_len: int | None = None, trace: dict | None = None) -> VoiceConditionals:
    """The whole voice of a checked recording (prepare_conditionals(wav, exaggeration)); prompt_len = T3's
    (None: the config's, 150 for the base model and 375 for Turbo)."""
    cfg = models.cfg
    prompt_len = cfg.t3_prompt_len if prompt_len is None else prompt_len
    exaggeration = check_exaggeration(exaggeration)
    device = models.tokenizer._mel_filters.device
    wav24 = soxr_hq(audio.samples, audio.sample_rate, cfg.s3gen_sr)  # librosa.load(path, sr=24000)
    if cfg.loudness_lufs is not None:  # Turbo's norm_loudness: one gain on the whole clip, before anything else
        wav24 = normalise_loudness(wav24, cfg.s3gen_sr, cfg.loudness_lufs)
    ref16 = soxr_hq(wav24, cfg.s3gen_sr, cfg.s3_sr)  # on the full signal, before the 10 s cut
    wav24 = wav24[: cfg.dec_cond_len]
    if trace is not None:
        trace["wav_24k"] = torch.from_numpy(wav24)

    # S3Gen's embed_ref: prompt mel, then tokens and x-vector of torchaudio-resampled 16 kHz audio
    ref24 = torch.from_numpy(wav24)[None]  # [1, L24]
    prompt_feat = mel_spectrogram(ref24).transpose(1, 2).contiguous()  # [1, F, 80]
    wav16 = SincResampler(cfg.s3gen_sr, cfg.s3_sr)(ref24)[0].to(device)  # [L16]
    embedding = models.campplus(campplus_features(wav16)).cpu()  # [1, 192]
    tokens = models.tokenizer(wav16).cpu()  # [1, ceil(frames / 4)]
    if trace is not None:
        trace["s3_tokens_untruncated"] = tokens
    frames = prompt_feat.size(1)
    if frames != TOKEN_MEL_RATIO * tokens.size(1):  # the reference's embed_ref fix-up (odd F, or padding)
        tokens = tokens[:, : frames // TOKEN_MEL_RATIO]

    # T3: prompt tokens and speaker embedding of the soxr 16 kHz signal
    t3_tokens = models.tokenizer(torch.from_numpy(ref16[: cfg.enc_cond_len]).to(device), max_tokens=prompt_len).cpu()
    ve_trace = {} if trace is not None else None
    speaker = models.voice_encoder.embed(ref16, ve_trace).cpu()  # [1, 256]
    if trace is not None:
        trace.update(ve_trim_interval=ve_trace["trim_interval"], ve_partial_embeds=ve_trace["partial_embeds"])
    if not bool(torch.isfinite(speaker).all()) or not bool(torch.isfinite(embedding).all()):
        raise VoiceInputError(f"{audio.source}: the speaker encoders found no voice in it (non-finite embedding)")
    if tokens.size(1) == 0 or t3_tokens.size(1) == 0:
        raise VoiceInputError(f"{audio.source}: too short to give any prompt tokens")
    return VoiceConditionals(
        speaker_emb=speaker,
        cond_prompt_speech_tokens=t3_tokens,
        emotion_adv=exaggeration * torch.ones(1, 1, 1),
        prompt_token=tokens.contiguous(),
        prompt_token_len=torch.tensor([tokens.size(1)]),
        prompt_feat=prompt_feat,
        embedding=embedding,
    )


def voice_from_file(models: VoiceModels, path: str | Path, exaggeration: float = 0.5,
                    prompt_len: int | None = None) -> tuple[VoiceConditionals, ReferenceAudio]:
    """Read, check and condition a recording; the ReferenceAudio carries notices (e.g. it was cut)."""
    check_exaggeration(exaggeration)
    audio = read_reference(path, models.cfg)
    return compute_conditionals(models, audio, exaggeration, prompt_len), audio


def voice_from_array(models: VoiceModels, samples, sample_rate: int, exaggeration: float = 0.5,
                     prompt_len: int | None = None) -> tuple[VoiceConditionals, ReferenceAudio]:
    """The same from float samples [n] or [n, channels] at `sample_rate`."""
    check_exaggeration(exaggeration)
    audio = reference_from_array(np.asarray(samples) if not hasattr(samples, "detach") else samples, sample_rate,
                                 models.cfg)
    return compute_conditionals(models, audio, exaggeration, prompt_len), audio
