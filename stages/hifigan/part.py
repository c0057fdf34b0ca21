"""The HiFiGAN stage's part of the model (s3gen.safetensors `mel2wav.*`) and a request's vocoder stream.

`new_vocoder_stream` is the one place a request's vocoder state is built: the HiFiGAN stage
process, the single-process path and offline synthesis draw the same source randomness.
"""
from __future__ import annotations

from pathlib import Path

import torch

from stages.common.params import RequestParams
from stages.common.seeds import derive_seed
from stages.common.spec import S3GEN_FILE, ModelSpec
from stages.hifigan.checkpoint import build_builtin_hift, load_hift
from stages.hifigan.config import HiFTConfig
from stages.hifigan.generator import HiFT
from stages.hifigan.streaming import VocoderStream


def load_hifigan_part(spec: ModelSpec) -> HiFT:
    """The vocoder, always float32 (it is small and phase-sensitive)."""
    if spec.builtin:
        hift = build_builtin_hift(HiFTConfig.from_name(spec.preset))
    else:
        d = Path(spec.checkpoint)
        hift = load_hift(d / S3GEN_FILE, HiFTConfig.from_checkpoint_dir(d))
    return hift.to(spec.device).eval()


def vocoder_generator(hift: HiFT, seed: int) -> torch.Generator:
    """The generator of a request's harmonic-source phase and noise, on the vocoder's device."""
    return torch.Generator(device=hift.stft_window.device).manual_seed(derive_seed(seed, "hifigan"))


def new_vocoder_stream(hift: HiFT, req: RequestParams) -> VocoderStream:
    """A request's vocoder state."""
    return VocoderStream(hift, vocoder_generator(hift, req.seed), lookahead_frames=req.schedule.vocoder_lookahead_frames)
