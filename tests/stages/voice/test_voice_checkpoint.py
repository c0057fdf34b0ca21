"""Voice-model weights: the built-in tiny models are the golden tiny weights; strict loading names file and key."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from stages.common.weights import CheckpointError
from stages.voice import checkpoint as ckpt
from tests.golden import GOLDEN_DIR, config, load_case

from .conftest import CAMPPLUS, S3GEN, VE


def sha1_12(t: torch.Tensor) -> str:
    return hashlib.sha1(t.contiguous().numpy().astype("<f4").tobytes()).hexdigest()[:12]


@pytest.fixture(scope="module")
def manifest():
    return json.loads((GOLDEN_DIR / "weights_manifest.json").read_text())


def test_builtin_voice_encoder_is_the_golden_one(tiny_cfg, manifest):
    weights = ckpt.builtin_voice_encoder_weights(tiny_cfg.ve)
    want = manifest["ve.safetensors"]
    assert set(weights) == set(want)
    assert {k: sha1_12(v) for k, v in weights.items()} == {k: m["sha1_12"] for k, m in want.items()}


def test_builtin_tokenizer_is_the_golden_one(tiny_cfg, manifest):
    weights = ckpt.builtin_tokenizer_weights(tiny_cfg.tokenizer)
    want = {k: m for k, m in manifest["s3gen.safetensors"].items() if k.startswith("tokenizer.") and k != ckpt.WINDOW_KEY}
    assert set(weights) == set(want)  # the constant _mel_filters included, bit for bit
    assert {k: sha1_12(v) for k, v in weights.items()} == {k: m["sha1_12"] for k, m in want.items()}


def test_builtin_campplus_is_the_golden_one(tiny_cfg):
    assert hashlib.sha1(CAMPPLUS.read_bytes()).hexdigest() == config()["voice_cloning"]["campplus_file_sha1"]
    weights, golden = ckpt.builtin_campplus_weights(tiny_cfg.campplus), load_file(str(CAMPPLUS))
    assert set(weights) == set(golden) and len(golden) == config()["voice_cloning"]["CAMPPlus"]["state_dict_tensors"]
    for k, v in golden.items():  # BatchNorm running stats by their own recipe branches; int64 counters = 0
        assert weights[k].dtype == v.dtype and torch.equal(weights[k], v), k


def test_builtin_models_compute_what_the_loaded_ones_do(tiny_cfg, golden_models):
    wav = load_case("s3_tokenizer")["wav"]
    assert torch.equal(ckpt.build_builtin_s3_tokenizer(tiny_cfg.tokenizer)(wav), golden_models.tokenizer(wav))


def test_every_preset_builds(tiny_cfg):
    from stages.voice.config import PRESETS

    for name in ("small", "chatterbox"):
        schema = ckpt.tokenizer_schema(PRESETS[name].tokenizer)
        assert schema["tokenizer.encoder.conv1.weight"].shape == (1280, 128, 3)
        assert len([k for k in ckpt.campplus_schema(PRESETS[name].campplus)]) == 937  # the real file's count
        assert len(ckpt.voice_encoder_schema(PRESETS[name].ve)) == 16


def test_missing_and_misshaped_keys_are_named(tiny_cfg, tmp_path):
    ve = load_file(str(VE))
    del ve["proj.bias"]
    ve["lstm.weight_hh_l0"] = torch.zeros(3, 3)
    ve["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "ve.safetensors"
    save_file(ve, str(bad))
    with pytest.raises(CheckpointError) as e:
        ckpt.load_voice_encoder(bad, tiny_cfg.ve)
    msg = str(e.value)
    assert str(bad) in msg and "missing key proj.bias" in msg and "unexpected key extra.weight" in msg
    assert "lstm.weight_hh_l0: shape [3, 3]" in msg


def test_s3gen_without_campplus_says_so(tiny_cfg):
    with pytest.raises(CheckpointError, match=r"has no speaker_encoder\.\* tensors \(the CAMPPlus"):
        ckpt.load_campplus(S3GEN, tiny_cfg.campplus)


def test_a_file_that_is_not_safetensors_is_named(tiny_cfg, tmp_path):
    (tmp_path / "s3gen.safetensors").write_bytes(b"not a real file")
    with pytest.raises(CheckpointError, match=r"s3gen\.safetensors: not a readable safetensors file"):
        ckpt.load_s3_tokenizer(tmp_path / "s3gen.safetensors", tiny_cfg.tokenizer)


def test_counters_must_be_integers(tiny_cfg, tmp_path):
    cam = load_file(str(CAMPPLUS))
    cam["speaker_encoder.head.bn1.num_batches_tracked"] = torch.zeros(())
    save_file(cam, str(tmp_path / "c.safetensors"))
    with pytest.raises(CheckpointError, match="num_batches_tracked: dtype torch.float32 is not an integer type"):
        ckpt.load_campplus(tmp_path / "c.safetensors", tiny_cfg.campplus)


def test_constant_buffers_are_optional(tiny_cfg, golden_models, tmp_path):
    """A file without tokenizer._mel_filters gets the computed one; a tokenizer.window (Turbo's file) is ignored."""
    t = {k: v for k, v in load_file(str(S3GEN)).items() if k.startswith("tokenizer.") and k != ckpt.MEL_FILTERS_KEY}
    t[ckpt.WINDOW_KEY] = torch.hann_window(400)
    save_file(t, str(tmp_path / "s3gen.safetensors"))
    tok = ckpt.load_s3_tokenizer(tmp_path / "s3gen.safetensors", tiny_cfg.tokenizer)
    assert torch.equal(tok._mel_filters, golden_models.tokenizer._mel_filters)


def test_a_checkpoint_without_ve_is_refused_only_for_cloning(tmp_path):
    (tmp_path / "s3gen.safetensors").write_bytes(S3GEN.read_bytes())
    with pytest.raises(CheckpointError, match=r"voice cloning needs ve\.safetensors .*runs from conds\.pt without"):
        ckpt.load_voice_models(tmp_path)
