"""Flow API behaviour: lengths, finalize, empty/short inputs, noise handling, errors, dtype."""
from __future__ import annotations

import pytest
import torch

from stages.cfm import NoiseSource, builtin_flow_conditionals, build_builtin_flow

STEPS = 2  # fewer Euler steps keep these shape tests fast; parity tests use the real 10


@pytest.fixture(scope="module")
def flow(tiny_cfg):
    return build_builtin_flow(tiny_cfg)


@pytest.fixture(scope="module")
def conds(tiny_cfg):
    return builtin_flow_conditionals(tiny_cfg)


def _tokens(n, seed=0):
    return torch.randint(0, 6561, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 25])
def test_output_is_exactly_2n_frames(flow, conds, n):
    mel = flow.infer(_tokens(n), conds, NoiseSource(0), finalize=True, n_timesteps=STEPS)
    assert mel.shape == (1, 80, 2 * n) and mel.dtype == torch.float32
    assert bool(torch.isfinite(mel).all())


@pytest.mark.parametrize("n,frames", [(1, 0), (3, 0), (4, 2), (10, 14)])
def test_not_finalized_drops_lookahead_frames(flow, conds, n, frames):
    mel = flow.infer(_tokens(n), conds, NoiseSource(0), finalize=False, n_timesteps=STEPS)
    assert mel.shape == (1, 80, frames)


def test_zero_tokens_gives_empty_mel(flow, conds):
    mel = flow.infer(torch.zeros(1, 0, dtype=torch.long), conds, NoiseSource(0))
    assert mel.shape == (1, 80, 0)


@pytest.mark.parametrize("t", [0, 1, 2, 3])
def test_encode_short_sequences(flow, t):
    assert flow.encode(_tokens(t), finalize=True).shape == (1, 80, 2 * t)
    assert flow.encode(_tokens(t), finalize=False).shape == (1, 80, max(0, 2 * t - 6))


def test_unfinalized_frames_are_a_prefix_of_finalized(flow):
    tokens = _tokens(12)
    full, part = flow.encode(tokens, True), flow.encode(tokens, False)
    assert torch.equal(part, full[:, :, : part.size(-1)])


def test_noise_source_equals_tensor(flow, conds):
    tokens = _tokens(6)
    src = NoiseSource(3)
    frames = 2 * (conds.n_prompt_tokens + 6)
    a = flow.infer(tokens, conds, src, n_timesteps=STEPS)
    b = flow.infer(tokens, conds, src.frames(0, frames).unsqueeze(0), n_timesteps=STEPS)
    assert torch.equal(a, b)
    c = flow.infer(tokens, conds, NoiseSource(4), n_timesteps=STEPS)
    assert not torch.allclose(a, c)


def test_bad_inputs(flow, conds):
    with pytest.raises(ValueError, match="token ids"):
        flow.encode(torch.tensor([[1, 6561]]), True)
    with pytest.raises(ValueError, match=r"\[1, T\]"):
        flow.encode(torch.zeros(2, 3, dtype=torch.long), True)
    with pytest.raises(ValueError, match="noise must have shape"):
        flow.infer(_tokens(5), conds, torch.zeros(1, 80, 3))
    with pytest.raises(ValueError, match="embedding"):
        flow.embed_speaker(torch.zeros(1, 256))


def test_float64_copy_agrees(flow, conds):
    tokens = _tokens(4)
    z = NoiseSource(9).frames(0, 2 * (conds.n_prompt_tokens + 4)).unsqueeze(0)
    mel32 = flow.infer(tokens, conds, z, n_timesteps=STEPS)
    import copy
    f64 = copy.deepcopy(flow).to(torch.float64)
    mel64 = f64.infer(tokens, conds, z, n_timesteps=STEPS)
    assert mel64.dtype == torch.float64
    assert float((mel64 - mel32.double()).norm() / mel64.norm()) < 1e-5
