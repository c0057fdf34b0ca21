"""The HiFiGAN stage's part of the model (s3gen.safetensors `mel2wav.*`) and a request's vocoder stream.

`new_vocoder_stream` is the one place a request's vocoder state is built: the HiFiGAN stage
process, the single-process path and offline synthesis draw the same source randomness.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from stages.common.layout import TURBO, detect_model
from stages.common.params import RequestParams
from stages.common.seeds import derive_seed
from stages.common.spec import S3GEN_FILE, ModelSpec
from stages.hifigan.checkpoint import build_builtin_hift, load_hift
from stages.hifigan.config import HiFTConfig
from stages.hifigan.generator import HiFT
from stages.hifigan.streaming import VocoderStream


# A Turbo preset's vocoder sizes: Turbo ships the base model's HiFT (mel2wav.* of s3gen_meanflow.safetensors).
TURBO_HIFT_PRESETS = {"turbo": "chatterbox", "turbo-small": "small", "turbo-tiny": "tiny"}


def load_hifigan_part(spec: ModelSpec) -> HiFT:
    """The vocoder, always float32 (it is small and phase-sensitive)."""
    if spec.turbo:
        return load_turbo_hift(spec).to(spec.device).eval()
    if spec.builtin:
        hift = build_builtin_hift(HiFTConfig.from_name(spec.preset))
    else:
        d = Path(spec.checkpoint)
        hift = load_hift(d / S3GEN_FILE, HiFTConfig.from_checkpoint_dir(d))
    return hift.to(spec.device).eval()


def load_turbo_hift(spec: ModelSpec) -> HiFT:
    """mel2wav.* of a Turbo folder's s3gen_meanflow.safetensors (strict), or the built-in one of a turbo preset."""
    from stages.cfm.meanflow import S3GEN_MEANFLOW_FILE

    if spec.builtin:
        if spec.preset not in TURBO_HIFT_PRESETS:
            raise ValueError(f"unknown Turbo preset {spec.preset!r}; choose one of {', '.join(sorted(TURBO_HIFT_PRESETS))}")
        return build_builtin_hift(HiFTConfig.from_name(TURBO_HIFT_PRESETS[spec.preset]))
    d = Path(spec.checkpoint)
    detect_model(d, TURBO)
    path = d / "config.json"  # a golden-format folder (test checkpoints) names its sizes; a released one has none
    data = json.loads(path.read_text()) if path.is_file() else {}
    s3 = (data.get("S3Gen") or {}).get("scaling", {}) if isinstance(data, dict) else {}
    cfg = (HiFTConfig.from_reference_dict(s3["HiFTGenerator"], s3.get("ConvRNNF0Predictor"))
           if "HiFTGenerator" in s3 else HiFTConfig.from_name("chatterbox"))
    return load_hift(d / S3GEN_MEANFLOW_FILE, cfg)


def vocoder_generator(hift: HiFT, seed: int) -> torch.Generator:
    """The generator of a request's harmonic-source phase and noise, on the vocoder's device."""
    return torch.Generator(device=hift.stft_window.device).manual_seed(derive_seed(seed, "hifigan"))


def new_vocoder_stream(hift: HiFT, req: RequestParams) -> VocoderStream:
    """A request's vocoder state."""
    return VocoderStream(hift, vocoder_generator(hift, req.seed), lookahead_frames=req.schedule.vocoder_lookahead_frames)
