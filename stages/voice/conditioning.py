"""A voice from a recording: the reference's `ChatterboxTTS.prepare_conditionals`, step for step.

    wav24  = the recording at 24 kHz (soxr_hq unless it already is 24 kHz)
    ref16  = soxr_hq(wav24 -> 16 kHz)            on the FULL signal
    wav24  = wav24[:10 s]
    S3Gen embed_ref(wav24):  prompt_feat = 24 kHz log-mel [1, F, 80] (F = n // 480)
                             wav16 = torchaudio sinc resampling of wav24 (a second, different 16 kHz signal)
                             embedding = CAMPPlus(fbank(wav16))          [1, 192]
                             prompt_token = S3Tokenizer(wav16)           [1, ceil(F/2)], cut to F // 2 if F != 2T
    T3 prompt:   S3Tokenizer(ref16[:6 s], max 150 tokens)                [1, <= 150]
    T3 speaker:  VoiceEncoder(ref16) (trimmed, partials, mean, L2)       [1, 256]
    emotion_adv = exaggeration                                           [1, 1, 1]

`VoiceConditionals` holds exactly what the reference's `Conditionals.save` would write (so
a voice can be compared with, or exported as, a conds.pt); `.t3()` and `.flow()` give what
the T3 and CFM stages take. Pure computation: no files besides the input, no sockets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.cfm.conds import FlowConditionals
from stages.hifigan.mel import mel_spectrogram
from stages.t3.conds import T3Conditionals
from stages.voice.audio import ReferenceAudio, VoiceInputError, read_reference, reference_from_array
from stages.voice.campplus import CAMPPlus
from stages.voice.config import VoiceConfig
from stages.voice.fbank import campplus_features
from stages.voice.resample import SincResampler, soxr_hq
from stages.voice.s3_tokenizer import S3Tokenizer
from stages.voice.voice_encoder import VoiceEncoder

TOKEN_MEL_RATIO = 2  # 25 Hz tokens, 50 Hz mel frames

# Stored tensors, under the names conds.pt uses ("t3" and "gen" parts).
T3_FIELDS = ("speaker_emb", "cond_prompt_speech_tokens", "emotion_adv")
GEN_FIELDS = ("prompt_token", "prompt_token_len", "prompt_feat", "embedding")


@dataclass(frozen=True)
class VoiceConditionals:
    """One voice, as the reference's Conditionals holds it (t3.* and gen.* of conds.pt)."""

    speaker_emb: torch.Tensor  # t3 [1, 256] float32, L2-normalised VoiceEncoder embedding
    cond_prompt_speech_tokens: torch.Tensor  # t3 [1, <= 150] int64 (6 s at 25 Hz; fewer for a shorter clip)
    emotion_adv: torch.Tensor  # t3 [1, 1, 1] float32: the exaggeration the voice was made with
    prompt_token: torch.Tensor  # gen [1, T] int64 flow prompt tokens (10 s at most)
    prompt_token_len: torch.Tensor  # gen [1] int64 = T
    prompt_feat: torch.Tensor  # gen [1, F, 80] float32 natural-log mel of the same 10 s (F may be 2T + 1)
    embedding: torch.Tensor  # gen [1, 192] float32 raw CAMPPlus x-vector (the flow normalises it)

    @property
    def exaggeration(self) -> float:
        return float(self.emotion_adv.reshape(-1)[0])

    def t3(self) -> T3Conditionals:
        """T3's part: speaker embedding, prompt tokens, emotion."""
        return T3Conditionals(self.speaker_emb, self.cond_prompt_speech_tokens, self.emotion_adv)

    def flow(self) -> FlowConditionals:
        """The CFM's part, aligned as load_flow_conditionals aligns a conds.pt: T' = min(T, F // 2), mel cut to 2T'.

        With an odd F the reference keeps the extra prompt frame and then generates 2N - 1
        frames for N tokens; the engine needs the prompt/generated boundary on a token
        boundary (2 frames per token everywhere), so the last prompt frame is dropped.
        """
        n = min(self.prompt_token.size(1), self.prompt_feat.size(1) // TOKEN_MEL_RATIO)
        return FlowConditionals(self.prompt_token[:, :n].contiguous(),
                                self.prompt_feat[:, : n * TOKEN_MEL_RATIO].contiguous(), self.embedding)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat `t3.<field>` / `gen.<field>` map of contiguous CPU tensors (the voice store's layout)."""
        out = {f"t3.{f}": getattr(self, f) for f in T3_FIELDS}
        out.update({f"gen.{f}": getattr(self, f) for f in GEN_FIELDS})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "VoiceConditionals":
        return cls(**{f: tensors[f"t3.{f}"] for f in T3_FIELDS}, **{f: tensors[f"gen.{f}"] for f in GEN_FIELDS})


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
                         prompt_len: int = 150, trace: dict | None = None) -> VoiceConditionals:
    """The whole voice of a checked recording (prepare_conditionals(wav, exaggeration)); prompt_len = T3's."""
    cfg = models.cfg
    exaggeration = check_exaggeration(exaggeration)
    device = models.tokenizer._mel_filters.device
    wav24 = soxr_hq(audio.samples, audio.sample_rate, cfg.s3gen_sr)  # librosa.load(path, sr=24000)
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
                    prompt_len: int = 150) -> tuple[VoiceConditionals, ReferenceAudio]:
    """Read, check and condition a recording; the ReferenceAudio carries notices (e.g. it was cut)."""
    check_exaggeration(exaggeration)
    audio = read_reference(path, models.cfg)
    return compute_conditionals(models, audio, exaggeration, prompt_len), audio


def voice_from_array(models: VoiceModels, samples, sample_rate: int, exaggeration: float = 0.5,
                     prompt_len: int = 150) -> tuple[VoiceConditionals, ReferenceAudio]:
    """The same from float samples [n] or [n, channels] at `sample_rate`."""
    check_exaggeration(exaggeration)
    audio = reference_from_array(np.asarray(samples) if not hasattr(samples, "detach") else samples, sample_rate,
                                 models.cfg)
    return compute_conditionals(models, audio, exaggeration, prompt_len), audio
