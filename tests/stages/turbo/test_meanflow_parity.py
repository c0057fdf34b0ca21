"""The meanflow S3Gen against the golden turbo-tiny run: flow encoder, both estimator calls, the solve,
tokens -> waveform end to end with the 3 silence tokens."""
from __future__ import annotations

import pytest
import torch

from stages.cfm.conds import FlowConditionals, load_flow_conditionals
from stages.cfm.estimator import ConditionalDecoder, timestep_embedding
from stages.cfm.meanflow import SILENCE_TOKEN, linear_time_grid, with_trailing_silence
from stages.hifigan import HiFTConfig, apply_trim_fade, load_hift
from tests.golden_turbo import TURBO_DIR, load_case, rel_l2, scalars, tolerance


@pytest.fixture(scope="module")
def enc():
    return load_case("flow_encoder")


@pytest.fixture(scope="module")
def cfm():
    return load_case("cfm_meanflow")


def _x0(z, noised_mels):
    """The reference's noise: randn_like(mu) with its last noise_len frames replaced by the first draw."""
    x0 = z.clone()
    x0[..., z.shape[-1] - noised_mels.shape[-1]:] = noised_mels
    return x0


@pytest.mark.parametrize("finalize", [True, False])
def test_flow_encoder(golden_meanflow, enc, finalize):
    tag = "true" if finalize else "false"
    tokens = torch.cat([enc["prompt_token"], enc["token"]], dim=1)
    tol = tolerance("flow_encoder")
    h = golden_meanflow.encoder(golden_meanflow.input_embedding(tokens))
    mu = golden_meanflow.encode(tokens, finalize)
    assert rel_l2(h, enc[f"h_finalize_{tag}"]) <= tol
    assert rel_l2(mu, enc[f"mu_finalize_{tag}"]) <= tol
    assert rel_l2(golden_meanflow.embed_speaker(enc["embedding"]), enc[f"spks_finalize_{tag}"]) <= tol
    assert rel_l2(golden_meanflow.prompt_cond(enc["prompt_feat"], mu.size(-1)), enc[f"cond_finalize_{tag}"]) <= tol
    assert torch.equal(enc[f"mask_finalize_{tag}"], torch.ones(1, 1, mu.size(-1)))  # the maskfix


@pytest.mark.parametrize("call", [0, 1])
def test_estimator_calls(golden_meanflow, enc, cfm, call):
    e = golden_meanflow.estimator
    t, r = cfm[f"estimator_call{call}_t"], cfm[f"estimator_call{call}_r"]
    tol = tolerance("cfm_meanflow")
    with torch.no_grad():
        assert rel_l2(e.time_mlp(timestep_embedding(t, e.in_channels)), cfm[f"estimator_call{call}_t_emb"]) <= tol
        assert rel_l2(e.time_mlp(timestep_embedding(r, e.in_channels)), cfm[f"estimator_call{call}_r_emb"]) <= tol
        assert rel_l2(e.embed_time(t, r), cfm[f"estimator_call{call}_mixed_t"]) <= tol
        out = e(cfm[f"estimator_call{call}_x"], enc["mask_finalize_true"], enc["mu_finalize_true"], t,
                enc["spks_finalize_true"], enc["cond_finalize_true"], r)
    assert rel_l2(out, cfm[f"estimator_call{call}_out"]) <= tol


def test_time_grid_and_the_estimator_call_sequence(golden_meanflow, enc, cfm):
    """linspace(0, 1, 3) without warp; call 0 sees x0, call 1 sees x0 + 0.5 * v0."""
    grid = linear_time_grid(scalars("cfm_meanflow")["n_cfm_timesteps"])
    assert grid.tolist() == scalars("cfm_meanflow")["t_span"]
    assert [cfm["estimator_call0_t"].item(), cfm["estimator_call0_r"].item()] == grid[:2].tolist()
    x0 = _x0(cfm["z_finalize_true"], cfm["noised_mels"])
    assert torch.equal(x0, cfm["x0_finalize_true"]) and torch.equal(x0, cfm["estimator_call0_x"])
    x1 = x0 + (grid[1] - grid[0]) * cfm["estimator_call0_out"]
    assert rel_l2(x1, cfm["estimator_call1_x"]) <= tolerance("cfm_meanflow")


@pytest.mark.parametrize("finalize,ref", [(True, "mel_finalize_true"), (False, "mel_finalize_false_maskfix")])
def test_solve_with_injected_noise(golden_meanflow, enc, cfm, finalize, ref):
    conds = FlowConditionals(enc["prompt_token"], enc["prompt_feat"], enc["embedding"])
    x0 = _x0(cfm["z_finalize_true" if finalize else "z_finalize_false"], cfm["noised_mels"])
    mel = golden_meanflow.infer(enc["token"], conds, x0, finalize=finalize)  # n_timesteps: the config's 2
    assert rel_l2(mel, cfm[ref]) <= tolerance("cfm_meanflow")


def test_streaming_calls_reproduce_the_solve(golden_meanflow, enc, cfm):
    """encode + solve (what CFMStream calls; cfg_rate is ignored) give the reference mel over all frames."""
    tokens = torch.cat([enc["prompt_token"], enc["token"]], dim=1)
    mu = golden_meanflow.encode(tokens, True)
    spks = golden_meanflow.embed_speaker(enc["embedding"])
    cond = golden_meanflow.prompt_cond(enc["prompt_feat"], mu.size(-1))
    x0 = _x0(cfm["z_finalize_true"], cfm["noised_mels"])
    mel = golden_meanflow.solve(mu, spks, cond, x0, n_timesteps=2, cfg_rate=0.7)
    assert rel_l2(mel[:, :, enc["prompt_feat"].shape[1]:], cfm["mel_finalize_true"]) <= tolerance("cfm_meanflow")


def test_estimators_refuse_the_wrong_time_arguments(golden_meanflow, meanflow_cfg):
    t = torch.zeros(1)
    with pytest.raises(ValueError, match="needs the step's end time r"):
        golden_meanflow.estimator.embed_time(t)
    with torch.device("meta"):
        base = ConditionalDecoder(meanflow_cfg)
    with pytest.raises(ValueError, match="no time_embed_mixer"):
        base.embed_time(t, t)


def test_tokens_to_waveform_end_to_end(golden_meanflow, turbo_dir, meanflow_cfg):
    """s3gen_e2e: n generated tokens + 3 x 4299 -> flow -> HiFT -> trim fade = (n + 3) * 960 samples."""
    e = load_case("s3gen_e2e")
    speech = with_trailing_silence(e["generated_tokens"][None])
    assert torch.equal(speech[0], e["speech_tokens"]) and speech[0, -3:].tolist() == [SILENCE_TOKEN] * 3
    conds = load_flow_conditionals(TURBO_DIR / "conds.pt", meanflow_cfg)  # ref_dict = conds.pt gen
    mel = golden_meanflow.infer(speech, conds, _x0(e["z"], e["noised_mels"]))
    assert rel_l2(mel, e["mel"]) <= tolerance("s3gen_e2e", "mel")
    hift = load_hift(turbo_dir / "s3gen_meanflow.safetensors", HiFTConfig.from_name("tiny"))
    wav, source = hift.inference_given(mel, e["phase"], e["sine_noise"])
    wav_faded = apply_trim_fade(wav)
    n = e["generated_tokens"].numel()
    assert wav_faded.shape == (1, (n + 3) * 960)
    assert rel_l2(source, e["source"]) <= tolerance("s3gen_e2e", "source")
    assert rel_l2(wav, e["wav_before_trim_fade"]) <= tolerance("s3gen_e2e", "wav_before_trim_fade")
    assert rel_l2(wav_faded, e["wav"]) <= tolerance("s3gen_e2e", "wav")
    assert bool((wav_faded[0, :480] == 0).all())
