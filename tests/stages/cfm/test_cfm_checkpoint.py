"""Loading flow.* of s3gen.safetensors strictly, and the built-in random weights."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from stages.cfm import CFMConfig, build_builtin_flow, flow_schema, load_flow
from stages.common.weights import CheckpointError
from tests.golden import GOLDEN_DIR, config

S3GEN = GOLDEN_DIR / "s3gen.safetensors"


def _read_all() -> dict[str, torch.Tensor]:
    with safe_open(str(S3GEN), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_golden_file_loads_unchanged(golden_flow):
    with safe_open(str(S3GEN), framework="pt") as f:
        keys = list(f.keys())
        flow_keys = [k for k in keys if k.startswith("flow.")]
        assert any(k.startswith("tokenizer.") for k in keys) and any(k.startswith("mel2wav.") for k in keys)
        state = golden_flow.state_dict()
        assert sorted("flow." + k for k in state) == sorted(flow_keys)
        for k in flow_keys:
            assert torch.equal(state[k[len("flow."):]], f.get_tensor(k)), k


def test_param_count_matches_reference(tiny_cfg):
    n = sum(math.prod(spec.shape) for spec in flow_schema(tiny_cfg).values())
    assert n == config()["param_counts"]["s3gen_params_by_prefix"]["flow"]


def test_builtin_tiny_is_bit_identical_to_golden(tiny_cfg, golden_flow):
    built = build_builtin_flow(tiny_cfg).state_dict()
    golden = golden_flow.state_dict()
    assert built.keys() == golden.keys()
    for k in built:
        assert torch.equal(built[k], golden[k]), k


def test_config_from_checkpoint_dir(tmp_path, tiny_cfg):
    assert CFMConfig.from_checkpoint_dir(GOLDEN_DIR) == tiny_cfg
    assert CFMConfig.from_checkpoint_dir(tmp_path) == CFMConfig.from_name("chatterbox")
    (tmp_path / "config.json").write_text(json.dumps({"t3": {}}))
    assert CFMConfig.from_checkpoint_dir(tmp_path) == CFMConfig.from_name("chatterbox")


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown CFM preset"):
        CFMConfig.from_name("huge")


def test_chatterbox_schema_matches_documented_shapes():
    schema = flow_schema(CFMConfig.from_name("chatterbox"))
    assert schema["flow.input_embedding.weight"].shape == (6561, 512)
    assert schema["flow.encoder.pre_lookahead_layer.conv1.weight"].shape == (512, 512, 4)
    assert schema["flow.encoder.encoders.5.self_attn.pos_bias_u"].shape == (8, 64)
    assert "flow.encoder.up_encoders.3.feed_forward.w_1.weight" in schema
    assert schema["flow.decoder.estimator.down_blocks.0.0.block1.block.0.weight"].shape == (256, 320, 3)
    assert schema["flow.decoder.estimator.down_blocks.0.1.3.attn1.to_q.weight"].shape == (512, 256)
    assert schema["flow.decoder.estimator.down_blocks.0.0.mlp.1.weight"].shape == (256, 1024)
    assert "flow.decoder.estimator.mid_blocks.11.1.3.ff.net.2.weight" in schema
    assert schema["flow.decoder.estimator.final_proj.weight"].shape == (80, 256, 1)
    assert schema["flow.decoder.estimator.down_blocks.0.0.block1.block.2.weight"].branch == "norm_weight"


KEY = "flow.encoder.encoders.0.self_attn.linear_q.weight"


def test_misshaped_tensor_names_key_and_file(tmp_path):
    tensors = _read_all()
    tensors[KEY] = torch.zeros(3, 3)
    path = tmp_path / "bad_shape.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as e:
        load_flow(path, CFMConfig.from_name("tiny"))
    assert KEY in str(e.value) and str(path) in str(e.value)


def test_missing_tensor_names_key_and_file(tmp_path):
    tensors = _read_all()
    del tensors[KEY]
    path = tmp_path / "missing.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as e:
        load_flow(path, CFMConfig.from_name("tiny"))
    assert f"missing key {KEY}" in str(e.value) and str(path) in str(e.value)


def test_unexpected_flow_tensor_is_an_error(tmp_path):
    tensors = _read_all()
    tensors["flow.decoder.estimator.time_embed_mixer.weight"] = torch.zeros(4, 4)  # a meanflow checkpoint
    path = tmp_path / "meanflow.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="unexpected key flow.decoder.estimator.time_embed_mixer.weight"):
        load_flow(path, CFMConfig.from_name("tiny"))


def test_other_parts_may_be_absent(tmp_path, golden_flow):
    tensors = {k: v for k, v in _read_all().items() if k.startswith("flow.")}
    path = tmp_path / "flow_only.safetensors"
    save_file(tensors, str(path))
    flow = load_flow(path, CFMConfig.from_name("tiny"))
    assert torch.equal(flow.encoder_proj.weight, golden_flow.encoder_proj.weight)


def test_wrong_preset_fails(tmp_path):
    with pytest.raises(CheckpointError, match="shape"):
        load_flow(S3GEN, CFMConfig.from_name("small"))


def test_missing_or_garbage_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_flow(tmp_path / "nope.safetensors", CFMConfig.from_name("tiny"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_flow(junk, CFMConfig.from_name("tiny"))
