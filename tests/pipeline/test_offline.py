"""Offline (whole-utterance) synthesis: the golden end-to-end case, exact lengths, reproducibility."""
import pytest
import torch

from pipeline.models import ModelSpec
from pipeline.sequential import Engine, offline_synthesize
from stages.cfm.conds import FlowConditionals
from stages.hifigan.fade import apply_trim_fade
from stages.cfm.checkpoint import load_flow
from stages.cfm.config import CFMConfig
from stages.hifigan.checkpoint import load_hift
from stages.hifigan.config import HiFTConfig
from tests.golden import GOLDEN_DIR, load_case, rel_l2, tolerance


@pytest.fixture(scope="module")
def engine():
    return Engine(ModelSpec())


def test_golden_tokens_to_waveform():
    """S3Token2Wav.inference: flow (finalize, 10 steps) -> HiFT -> trim_fade, with the reference's injected randomness."""
    case = load_case("s3gen_e2e")
    flow = load_flow(GOLDEN_DIR / "s3gen.safetensors", CFMConfig.from_checkpoint_dir(GOLDEN_DIR))
    hift = load_hift(GOLDEN_DIR / "s3gen.safetensors", HiFTConfig.from_checkpoint_dir(GOLDEN_DIR))
    conds = FlowConditionals(prompt_token=case["prompt_token"], prompt_feat=case["prompt_feat"], embedding=case["embedding"])
    mel = flow.infer(case["speech_tokens"], conds, case["z"])
    assert rel_l2(mel, case["mel"]) < tolerance("s3gen_e2e", "mel")
    wav, source = hift.inference_given(mel, case["phase"], case["sine_noise"])
    assert rel_l2(source, case["source"]) < tolerance("s3gen_e2e", "source")
    assert rel_l2(wav, case["wav_before_trim_fade"]) < tolerance("s3gen_e2e", "wav_before_trim_fade")
    final = apply_trim_fade(wav)
    assert final.shape == case["wav"].shape == (1, 960 * case["speech_tokens"].shape[1])
    assert rel_l2(final, case["wav"]) < tolerance("s3gen_e2e", "wav")


def test_offline_length_and_seed(engine):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 6561, (17,), generator=g).tolist()
    a = offline_synthesize(engine, tokens, seed=4, n_timesteps=2)
    b = offline_synthesize(engine, tokens, seed=4, n_timesteps=2)
    c = offline_synthesize(engine, tokens, seed=5, n_timesteps=2)
    assert a.numel() == 960 * 17 and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:480], torch.zeros(480))  # the start fade's 20 ms of silence
    assert offline_synthesize(engine, tokens + [6561, 6562], seed=4, n_timesteps=2).numel() == 960 * 17
