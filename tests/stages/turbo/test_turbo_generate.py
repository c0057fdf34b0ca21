"""The offline Turbo path against the golden `generate_e2e` case, and its sample accounting."""
from __future__ import annotations

import pytest
import torch

from pipeline.models import ModelSpec
from pipeline.turbo import TurboEngine
from stages.t3.turbo_sampling import TurboSamplingParams
from tests.golden_turbo import load_case, rel_l2, scalars, tolerance

EOS = 6562


def inverse_cdf_sampler(uniforms: torch.Tensor):
    """The golden harness's stand-in for torch.multinomial: step i < K-1 picks the first id whose float64
    cumulative probability over ids < 6561 reaches uniforms[i] * total; the last step returns EOS."""
    state = {"i": 0}

    def choose(probs: torch.Tensor) -> torch.Tensor:
        i = state["i"]
        state["i"] += 1
        if i == len(uniforms) - 1:
            return torch.tensor([EOS])
        cum = probs[0, :6561].double().cumsum(0)
        return torch.searchsorted(cum, uniforms[i].double() * cum[-1]).view(1)

    return choose


def test_generate_end_to_end(turbo_engine):
    g = load_case("generate_e2e")
    text = scalars("generate_e2e")["text"]
    ids = turbo_engine.text_ids(text)
    assert ids == g["text_tokens"][0].tolist()  # exact
    picked = []
    sampler = inverse_cdf_sampler(g["uniforms"])

    def choose(probs):
        tok = sampler(probs)
        picked.append(int(tok))
        return tok

    tokens = turbo_engine.tokens(text, TurboSamplingParams(seed=0), choose=choose)
    assert picked == g["sampled_tokens"].tolist()  # our probs give the reference's draws
    assert tokens + [4299] * 3 == g["speech_tokens"].tolist()  # exact: EOS stripped, silence appended
    z = g["z"].clone()
    z[..., -g["noised_mels"].shape[-1]:] = g["noised_mels"]
    mel = turbo_engine.mel(tokens, z)
    assert rel_l2(mel, g["mel"]) <= tolerance("generate_e2e", "mel")
    wav = turbo_engine.vocode(mel, (g["phase"], g["sine_noise"]))
    assert wav.shape == (g["wav"].shape[-1],) == ((len(tokens) + 3) * 960,)
    assert rel_l2(wav, g["wav"][0]) <= tolerance("generate_e2e", "wav")


@pytest.mark.parametrize("tokens", [[], [5], [1, 2, 3, 6561, 6562, 40]])
def test_synthesize_sample_count(turbo_engine, tokens):
    """n valid tokens (ids >= 6561 dropped) -> exactly (n + 3) * 960 samples, silence included."""
    n = sum(1 for t in tokens if t < 6561)
    wav = turbo_engine.synthesize(tokens, seed=11)
    assert wav.shape == ((n + 3) * 960,)
    assert torch.equal(wav, turbo_engine.synthesize(tokens, seed=11))  # the seed alone fixes the audio


def test_generate_is_reproducible(turbo_engine):
    params = TurboSamplingParams(seed=21, max_new_tokens=6, ignore_eos=True)
    wav = turbo_engine.generate("Hello there.", params)
    assert wav.shape == ((6 + 3) * 960,)
    assert torch.equal(wav, turbo_engine.generate("Hello there.", params))


def test_builtin_turbo_tiny_is_the_golden_model(turbo_engine):
    """The built-in turbo-tiny models have the golden weights (tensor for tensor) and run end to end."""
    builtin = TurboEngine(ModelSpec(preset="turbo-tiny"), max_slots=1)
    for mine, golden in ((builtin.t3.generator.model, turbo_engine.t3.generator.model),
                         (builtin.cfm.flow, turbo_engine.cfm.flow), (builtin.hift, turbo_engine.hift)):
        a, b = mine.state_dict(), golden.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    wav = builtin.generate("Any text, even 日本語.", TurboSamplingParams(seed=1, max_new_tokens=4, ignore_eos=True))
    assert wav.shape == (7 * 960,)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown Turbo preset 'tiny'; choose one of turbo, turbo-small, turbo-tiny"):
        TurboEngine(ModelSpec(preset="tiny"))
