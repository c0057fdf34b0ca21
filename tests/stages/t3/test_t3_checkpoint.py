"""T3 weights: built-in tiny == golden file, strict loading errors, conditionals files."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from stages.common.weights import CheckpointError
from stages.t3.checkpoint import build_builtin_t3, builtin_t3_weights, load_t3, t3_schema
from stages.t3.conds import builtin_t3_conditionals, load_t3_conditionals
from tests.golden import GOLDEN_DIR

T3_FILE = GOLDEN_DIR / "t3_cfg.safetensors"


def _sha1_12(t: torch.Tensor) -> str:
    return hashlib.sha1(t.contiguous().float().numpy().astype("<f4").tobytes()).hexdigest()[:12]


def test_schema_matches_golden_file(tiny_cfg):
    ref = load_file(str(T3_FILE))
    schema = t3_schema(tiny_cfg)
    assert set(schema) == set(ref)
    assert all(schema[k].shape == tuple(v.shape) for k, v in ref.items())


def test_builtin_tiny_weights_bit_identical_to_golden(tiny_cfg):
    mine = builtin_t3_weights(tiny_cfg)
    ref = load_file(str(T3_FILE))
    assert all(torch.equal(mine[k], ref[k]) for k in ref)
    manifest = json.loads((GOLDEN_DIR / "weights_manifest.json").read_text())
    entries = manifest.get("t3_cfg.safetensors") or next(v for k, v in manifest.items() if "t3" in k)
    entries = entries.get("tensors", entries)
    assert set(entries) == set(ref)
    for key, meta in entries.items():
        assert _sha1_12(mine[key]) == meta["sha1_12"], key
    model = build_builtin_t3(tiny_cfg)
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_missing_tensor_names_key_and_file(tmp_path, tiny_cfg):
    tensors = load_file(str(T3_FILE))
    del tensors["tfmr.layers.1.mlp.up_proj.weight"]
    path = tmp_path / "missing.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as e:
        load_t3(path, tiny_cfg)
    assert "tfmr.layers.1.mlp.up_proj.weight" in str(e.value) and str(path) in str(e.value)


def test_misshaped_tensor_names_key_and_file(tmp_path, tiny_cfg):
    tensors = load_file(str(T3_FILE))
    tensors["speech_head.weight"] = torch.zeros(8193, 32)
    path = tmp_path / "misshaped.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as e:
        load_t3(path, tiny_cfg)
    assert "speech_head.weight" in str(e.value) and str(path) in str(e.value)


def test_missing_checkpoint_file(tmp_path, tiny_cfg):
    with pytest.raises(CheckpointError, match="not found"):
        load_t3(tmp_path / "nope.safetensors", tiny_cfg)


def test_conds_file_matches_golden_case(tiny_cfg):
    from tests.golden import load_case

    c = load_case("conds")
    conds = load_t3_conditionals(GOLDEN_DIR / "conds.pt", tiny_cfg)
    assert torch.equal(conds.speaker_emb, c["t3_speaker_emb"])
    assert torch.equal(conds.cond_prompt_speech_tokens, c["t3_cond_prompt_speech_tokens"])
    assert torch.equal(conds.emotion_adv, c["t3_emotion_adv"])


def test_conds_missing_or_malformed(tmp_path, tiny_cfg):
    with pytest.raises(CheckpointError, match="not found"):
        load_t3_conditionals(tmp_path / "conds.pt", tiny_cfg)
    bad = tmp_path / "bad.pt"
    torch.save({"t3": {"speaker_emb": torch.zeros(1, 3)}}, str(bad))
    with pytest.raises(CheckpointError, match="speaker_emb"):
        load_t3_conditionals(bad, tiny_cfg)


def test_builtin_conditionals_deterministic(tiny_cfg):
    a, b = builtin_t3_conditionals(tiny_cfg), builtin_t3_conditionals(tiny_cfg)
    assert torch.equal(a.speaker_emb, b.speaker_emb)
    assert torch.equal(a.cond_prompt_speech_tokens, b.cond_prompt_speech_tokens)
    assert (a.speaker_emb >= 0).all() and abs(float(a.speaker_emb.norm()) - 1) < 1e-6
    assert int(a.cond_prompt_speech_tokens.max()) < tiny_cfg.start_speech_token
    a.check(tiny_cfg)
