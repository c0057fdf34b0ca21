"""Voice cloning for Turbo against the golden turbo-tiny run (`voice_prompt_t3`): the -27 LUFS gain, the 15 s /
375-token T3 prompt and the speaker embedding; and Turbo's "longer than 5 s" minimum."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.voice.audio import VoiceInputError, reference_from_array
from stages.voice.checkpoint import build_builtin_campplus, load_s3_tokenizer, load_voice_encoder
from stages.voice.conditioning import VoiceModels, compute_conditionals
from stages.voice.config import VoiceConfig
from stages.voice.loudness import loudness_gain
from tests.golden import rel_l2
from tests.golden_turbo import load_case, tolerance


@pytest.fixture(scope="module")
def models(turbo_dir):
    cfg = VoiceConfig.from_name("turbo-tiny")  # the golden sizes, Turbo's lengths and loudness target
    # CAMPPlus is omitted from the golden turbo-tiny folder (its case covers the T3 half): built-in weights
    return VoiceModels(cfg, load_voice_encoder(turbo_dir / "ve.safetensors", cfg.ve),
                       load_s3_tokenizer(turbo_dir / "s3gen_meanflow.safetensors", cfg.tokenizer),
                       build_builtin_campplus(cfg.campplus))


def test_turbo_voice_t3_half_matches_the_reference(models):
    case = load_case("voice_prompt_t3")
    wav = case["wav_file_24k"].numpy()
    gain = loudness_gain(wav, 24000)
    assert gain == pytest.approx(0.4126011026414707, rel=1e-6)  # the reference's pyloudnorm gain
    trace = {}
    conds = compute_conditionals(models, reference_from_array(wav, 24000, models.cfg), exaggeration=0.0, trace=trace)
    assert torch.equal(trace["wav_24k"], torch.from_numpy(wav * np.float32(gain)))  # a plain gain, nothing else
    assert torch.equal(conds.cond_prompt_speech_tokens, case["cond_prompt_speech_tokens"])  # tokens: exact
    assert rel_l2(conds.speaker_emb, case["speaker_emb"]) < tolerance("voice_prompt_t3", "speaker_emb")
    assert models.cfg.t3_prompt_len == 375 and models.cfg.enc_cond_len == 240_000


def test_turbo_needs_more_than_5_seconds(models):
    sr = 24000
    noise = np.random.default_rng(0).standard_normal(5 * sr).astype(np.float32) * 0.1
    with pytest.raises(VoiceInputError, match="is 5.00 s long; a voice needs more than 5 s of speech"):
        reference_from_array(noise, sr, models.cfg)
    assert reference_from_array(np.concatenate([noise, noise[:24]]), sr, models.cfg).samples.shape[0] == 5 * sr + 24
    assert reference_from_array(noise[: 2 * sr], sr, VoiceConfig.from_name("tiny")).samples.shape[0] == 2 * sr  # base: 1 s


def test_silence_is_not_normalised():
    assert loudness_gain(np.zeros(48000, np.float32), 24000) is None  # -inf LUFS: the reference skips the gain
