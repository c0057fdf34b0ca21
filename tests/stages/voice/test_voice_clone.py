"""Golden `voice_clone_24k` / `voice_clone_44k`: the whole conditionals from a WAV file, and each stage's part."""
from __future__ import annotations

import pytest
import torch

from stages.cfm import NoiseSource, build_builtin_flow
from stages.cfm.config import CFMConfig
from stages.t3.config import T3Config
from stages.voice.audio import read_reference
from stages.voice.conditioning import compute_conditionals, voice_from_array
from tests.golden import cases, load_case, rel_l2, tolerance

from .conftest import write_case_wav

OUTPUTS = {  # golden tensor -> VoiceConditionals field
    "t3_speaker_emb": "speaker_emb", "t3_cond_prompt_speech_tokens": "cond_prompt_speech_tokens",
    "t3_emotion_adv": "emotion_adv", "gen_prompt_token": "prompt_token", "gen_prompt_token_len": "prompt_token_len",
    "gen_prompt_feat": "prompt_feat", "gen_embedding": "embedding",
}
TRACED = ["s3_tokens_untruncated", "ve_trim_interval", "ve_partial_embeds"]


def compare(case: str, name: str, mine: torch.Tensor, ref: torch.Tensor) -> None:
    assert mine.shape == ref.shape, name
    if not ref.is_floating_point():
        assert mine.dtype == torch.int64 and torch.equal(mine, ref), name
    else:
        assert mine.dtype == torch.float32 and rel_l2(mine, ref) < tolerance(case, name), name


@pytest.fixture(scope="module", params=["voice_clone_24k", "voice_clone_44k"])
def clone(request, golden_models, tiny_cfg, tmp_path_factory):
    case = request.param
    wav = write_case_wav(case, tmp_path_factory.mktemp(case) / "ref.wav")
    trace = {}
    exaggeration = cases()[case]["scalars"]["exaggeration"]
    conds = compute_conditionals(golden_models, read_reference(wav, tiny_cfg), exaggeration, 150, trace)
    return case, conds, trace


def test_conditionals_match_the_reference(clone):
    case, conds, _ = clone
    ref = load_case(case)
    for name, field in OUTPUTS.items():
        compare(case, name, getattr(conds, field), ref[name])


def test_intermediates(clone):
    case, _, trace = clone
    ref = load_case(case)
    for name in TRACED + (["wav_24k"] if "wav_24k" in ref else []):
        compare(case, name, trace[name], ref[name])


def test_lengths_follow_the_reference(clone):
    """10 s / 6 s cuts, the odd-F token truncation, T3 prompt <= 150 without padding."""
    case, conds, trace = clone
    s = cases()[case]["scalars"]
    assert conds.prompt_feat.shape[1] == s["prompt_feat_frames"]  # n24 // 480
    assert trace["s3_tokens_untruncated"].shape[1] == s["s3_tokens_untruncated"]
    assert conds.prompt_token.shape[1] == s["prompt_tokens"] == conds.prompt_feat.shape[1] // 2
    assert conds.cond_prompt_speech_tokens.shape[1] == s["t3_prompt_tokens"]


def test_stage_parts(clone):
    """T3 gets speaker + prompt + emotion; the flow gets tokens with exactly 2 mel frames each (odd F -> F - 1)."""
    _, conds, _ = clone
    t3 = conds.t3()
    t3.check(T3Config.from_name("tiny"))
    assert t3.speaker_emb is conds.speaker_emb and float(t3.emotion_adv) == pytest.approx(conds.exaggeration)
    flow_conds = conds.flow()
    p = conds.prompt_token.shape[1]
    assert flow_conds.prompt_token.shape == (1, p)
    assert flow_conds.prompt_feat.shape == (1, 2 * p, 80)
    assert torch.equal(flow_conds.prompt_feat, conds.prompt_feat[:, : 2 * p])
    flow = build_builtin_flow(CFMConfig.from_name("tiny"))
    mel = flow.infer(torch.tensor([[1, 2, 3, 4, 5]]), flow_conds, NoiseSource(0), n_timesteps=2)
    assert mel.shape == (1, 80, 10)


def test_an_array_gives_the_same_voice_as_its_file(golden_models, tiny_cfg, clone):
    case, conds, _ = clone
    ref = load_case(case)
    sr = cases()[case]["scalars"]["sample_rate"]
    from_array, audio = voice_from_array(golden_models, ref["pcm16"].float().numpy() / 32768, sr,
                                         cases()[case]["scalars"]["exaggeration"])
    assert audio.sample_rate == sr and audio.channels == 1
    for k, v in conds.tensors().items():
        assert torch.equal(from_array.tensors()[k], v), k
