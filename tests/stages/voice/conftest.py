"""Shared fixtures of the voice tests: the golden tiny conditioning models (loaded once per session)."""
from __future__ import annotations

import pytest
import soundfile as sf

from stages.voice.checkpoint import load_campplus, load_s3_tokenizer, load_voice_encoder
from stages.voice.conditioning import VoiceModels
from stages.voice.config import VoiceConfig
from tests.golden import GOLDEN_DIR, cases, load_case

S3GEN = GOLDEN_DIR / "s3gen.safetensors"  # tokenizer.* (no speaker_encoder.* at this scale)
CAMPPLUS = GOLDEN_DIR / "campplus.safetensors"  # the tiny CAMPPlus, keys speaker_encoder.* as in s3gen.safetensors
VE = GOLDEN_DIR / "ve.safetensors"


@pytest.fixture(scope="session")
def tiny_cfg() -> VoiceConfig:
    return VoiceConfig.from_name("tiny")


@pytest.fixture(scope="session")
def golden_models(tiny_cfg) -> VoiceModels:
    """The golden checkpoint files, loaded by our strict loaders."""
    return VoiceModels(tiny_cfg, load_voice_encoder(VE, tiny_cfg.ve), load_s3_tokenizer(S3GEN, tiny_cfg.tokenizer),
                       load_campplus(CAMPPLUS, tiny_cfg.campplus))


def write_case_wav(case: str, path) -> str:
    """The voice-cloning case's recording as the reference read it: a 16-bit PCM WAV file."""
    c = load_case(case)
    sf.write(str(path), c["pcm16"].numpy(), cases()[case]["scalars"]["sample_rate"], subtype="PCM_16")
    return str(path)
