"""Checkpoint schema, strict loading of the golden s3gen.safetensors, and the built-in weights."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from stages.common.weights import CheckpointError
from stages.hifigan import build_builtin_hift, hift_schema, load_hift
from stages.hifigan.checkpoint import builtin_checkpoint, fold_weight_norm
from tests.golden import GOLDEN_DIR

S3GEN = GOLDEN_DIR / "s3gen.safetensors"


@pytest.fixture(scope="module")
def manifest() -> dict:
    m = json.loads((GOLDEN_DIR / "weights_manifest.json").read_text())["s3gen.safetensors"]
    return {k: v for k, v in m.items() if k.startswith("mel2wav.")}


@pytest.fixture(scope="module")
def golden_tensors() -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(S3GEN)).items() if k.startswith("mel2wav.")}


def test_schema_matches_manifest(tiny_cfg, manifest):
    schema = hift_schema(tiny_cfg)
    assert set(schema) == set(manifest)
    for key, spec in schema.items():
        assert list(spec.shape) == manifest[key]["shape"], key
        assert spec.branch == manifest[key]["branch"], key


def test_builtin_tiny_is_bit_identical_to_golden(tiny_cfg, manifest, golden_tensors):
    ckpt = builtin_checkpoint(tiny_cfg)
    for key, t in ckpt.items():
        sha = hashlib.sha1(t.numpy().astype("<f4").tobytes()).hexdigest()[:12]
        assert sha == manifest[key]["sha1_12"], key
        assert torch.equal(t, golden_tensors[key]), key


def test_builtin_model_equals_loaded_model(golden_hift, tiny_cfg):
    built = build_builtin_hift(tiny_cfg).state_dict()
    for key, t in golden_hift.state_dict().items():
        assert torch.equal(t, built[key]), key


def test_weight_norm_folding_matches_torch_parametrization(golden_tensors, golden_hift):
    # ups.0 is a ConvTranspose1d: g is per *input* channel (dim 0 of [C_in, C_out, k]).
    ref = torch.nn.utils.parametrizations.weight_norm(torch.nn.ConvTranspose1d(16, 8, 16, 8, padding=4))
    ref.parametrizations.weight.original0.data = golden_tensors["mel2wav.ups.0.parametrizations.weight.original0"]
    ref.parametrizations.weight.original1.data = golden_tensors["mel2wav.ups.0.parametrizations.weight.original1"]
    assert torch.equal(ref.weight, golden_hift.ups[0].weight)
    g, v = torch.rand(4, 1, 1) + 0.5, torch.randn(4, 3, 5)
    w = fold_weight_norm(g, v)
    assert torch.allclose(w.flatten(1).norm(dim=1), g.flatten(), rtol=1e-6)


def _write(tmp_path, tensors):
    path = tmp_path / "s3gen.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_misshaped_tensor_names_key_and_file(tmp_path, tiny_cfg, golden_tensors):
    key = "mel2wav.resblocks.4.convs1.1.parametrizations.weight.original1"
    bad = dict(golden_tensors)
    bad[key] = torch.zeros(3, 3, 3)
    path = _write(tmp_path, bad)
    with pytest.raises(CheckpointError) as e:
        load_hift(path, tiny_cfg)
    assert key in str(e.value) and str(path) in str(e.value)


def test_missing_tensor_names_key_and_file(tmp_path, tiny_cfg, golden_tensors):
    key = "mel2wav.f0_predictor.classifier.weight"
    bad = {k: v for k, v in golden_tensors.items() if k != key}
    bad["flow.something.weight"] = torch.zeros(2)  # other stages' keys are ignored
    path = _write(tmp_path, bad)
    with pytest.raises(CheckpointError) as e:
        load_hift(path, tiny_cfg)
    assert key in str(e.value) and str(path) in str(e.value)


def test_wrong_preset_for_checkpoint_fails(tmp_path):
    from stages.hifigan import HiFTConfig

    with pytest.raises(CheckpointError, match="mel2wav.conv_pre"):
        load_hift(S3GEN, HiFTConfig.from_name("small"))


def test_missing_file(tmp_path, tiny_cfg):
    with pytest.raises(CheckpointError, match="not found"):
        load_hift(tmp_path / "nope.safetensors", tiny_cfg)
