"""Parity with the reference flow on the golden tiny fixtures (flow_encoder, cfm, s3gen_e2e cases)."""
from __future__ import annotations

import pytest
import torch

from stages.cfm import FlowConditionals
from tests.golden import load_case, rel_l2, tolerance


@pytest.mark.parametrize("finalize", [True, False])
def test_encoder_outputs(golden_flow, flow_case, finalize):
    tag = "true" if finalize else "false"
    tokens = torch.cat([flow_case["prompt_token"], flow_case["token"]], dim=1)
    mu = golden_flow.encode(tokens, finalize)
    spks = golden_flow.embed_speaker(flow_case["embedding"])
    cond = golden_flow.prompt_cond(flow_case["prompt_feat"], mu.size(-1))
    tol = tolerance("flow_encoder")
    assert rel_l2(mu, flow_case[f"mu_finalize_{tag}"]) < tol
    assert rel_l2(spks, flow_case[f"spks_finalize_{tag}"]) < tol
    assert rel_l2(cond, flow_case[f"cond_finalize_{tag}"]) < tol
    # the CFM mask is all ones over mu's frames (the maskfix for finalize=False)
    assert torch.equal(flow_case[f"mask_finalize_{tag}"], torch.ones(1, 1, mu.size(-1)))


def test_encoder_hidden_states(golden_flow, flow_case):
    tokens = torch.cat([flow_case["prompt_token"], flow_case["token"]], dim=1)
    h = golden_flow.encoder(golden_flow.input_embedding(tokens))
    assert rel_l2(h, flow_case["h_finalize_true"]) < tolerance("flow_encoder")


def test_estimator_call(golden_flow, cfm_case):
    c = cfm_case
    with torch.no_grad():
        out = golden_flow.estimator(
            c["estimator_in_x"], c["estimator_in_mask"], c["estimator_in_mu"],
            c["estimator_in_t"], c["estimator_in_spks"], c["estimator_in_cond"],
        )
    assert rel_l2(out, c["estimator_out"]) < tolerance("cfm", "estimator_out")


@pytest.mark.parametrize("finalize,ref", [(True, "mel_finalize_true"), (False, "mel_finalize_false_maskfix")])
def test_mel_with_injected_noise(golden_flow, golden_conds, flow_case, cfm_case, finalize, ref):
    z = cfm_case["z_finalize_true" if finalize else "z_finalize_false"]
    mel = golden_flow.infer(flow_case["token"], golden_conds, z, finalize=finalize)
    assert rel_l2(mel, cfm_case[ref]) < tolerance("cfm", ref)


def test_solve_matches_infer(golden_flow, golden_conds, flow_case, cfm_case):
    """encode + solve (the streaming engine's calls) reproduce the reference mel over all frames."""
    tokens = torch.cat([flow_case["prompt_token"], flow_case["token"]], dim=1)
    mu = golden_flow.encode(tokens, True)
    spks = golden_flow.embed_speaker(flow_case["embedding"])
    cond = golden_flow.prompt_cond(flow_case["prompt_feat"], mu.size(-1))
    mel = golden_flow.solve(mu, spks, cond, cfm_case["z_finalize_true"], n_timesteps=10, cfg_rate=0.7)
    p = golden_conds.n_prompt_frames
    assert rel_l2(mel[:, :, p:], cfm_case["mel_finalize_true"]) < tolerance("cfm")


def test_s3gen_e2e_mel(golden_flow):
    """The flow half of the end-to-end case: conds.gen voice, 20 tokens, injected z."""
    e = load_case("s3gen_e2e")
    conds = FlowConditionals(e["prompt_token"], e["prompt_feat"], e["embedding"])
    mel = golden_flow.infer(e["speech_tokens"], conds, e["z"], finalize=True)
    assert rel_l2(mel, e["mel"]) < 1e-5
