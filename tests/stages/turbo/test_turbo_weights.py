"""Turbo checkpoints: the recipe rebuilds the golden files, strict loading, conds.pt, layout detection."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from pipeline.layout import AmbiguousCheckpointError, CHATTERBOX_FILES, TURBO_FILES, detect_model
from pipeline.turbo import check_turbo_checkpoint
from stages.cfm.meanflow import (MIXER_KEY, load_meanflow_flow, meanflow_config, meanflow_config_from_checkpoint_dir,
                                 meanflow_flow_schema)
from stages.common.weights import CheckpointError
from stages.t3.turbo_checkpoint import load_turbo_t3, turbo_t3_file_schema
from stages.t3.turbo_conds import load_turbo_t3_conditionals
from stages.t3.turbo_config import TurboT3Config
from tests.golden_turbo import CONSTANT_BUFFERS, TURBO_DIR, load_case, manifest, recipe_checkpoints, sha1_12


@pytest.fixture(scope="module")
def recipe():
    return recipe_checkpoints()


@pytest.mark.parametrize("name", ["t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors", "ve.safetensors"])
def test_recipe_rebuilds_the_golden_files(recipe, name):
    """Every key, shape and value (SHA-1) of the golden file, nothing more."""
    want, mine = manifest()[name], recipe[name]
    assert set(mine) == set(want)
    for key, entry in want.items():
        assert list(mine[key].shape) == entry["shape"], key
        if key not in CONSTANT_BUFFERS:
            assert sha1_12(mine[key]) == entry["sha1_12"], key


def test_configs_from_the_golden_folder():
    assert TurboT3Config.from_checkpoint_dir(TURBO_DIR) == TurboT3Config.from_name("turbo-tiny")
    assert meanflow_config_from_checkpoint_dir(TURBO_DIR) == meanflow_config("turbo-tiny")
    assert meanflow_config("turbo-tiny").n_timesteps == 2


def test_real_size_schemas_match_the_released_files():
    """The fact sheet's counts of the released files: 299 T3 tensors / 478,862,755 parameters,
    1122 flow.* tensors (mixer [1024, 2048] included)."""
    t3 = turbo_t3_file_schema(TurboT3Config.from_name("turbo"))
    assert len(t3) == 299 and sum(math.prod(s.shape) for s in t3.values()) == 478_862_755
    assert t3["tfmr.h.23.attn.c_attn.weight"].shape == (1024, 3072)  # Conv1D: (in, out)
    assert t3["tfmr.wpe.weight"].shape == (8196, 1024) and t3["speech_head.bias"].shape == (6563,)
    flow = meanflow_flow_schema(meanflow_config("turbo"))
    assert len(flow) == 1122 and flow[MIXER_KEY].shape == (1024, 2048)
    small = TurboT3Config.from_name("turbo-small")
    assert (small.num_layers, small.hidden_size, small.text_vocab_size) == (4, 1024, 50276)


def test_unused_tables_are_checked_but_not_kept(golden_t3):
    keys = set(golden_t3.state_dict())
    assert "tfmr.wte.weight" not in keys and "text_head.weight" not in keys
    assert "speech_head.bias" in keys


def _t3_file(tmp_path, tensors):
    path = tmp_path / "t3_turbo_v1.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_t3_strict_loading_names_every_problem(recipe, tmp_path, t3_cfg):
    tensors = dict(recipe["t3_turbo_v1.safetensors"])
    del tensors["tfmr.wte.weight"]  # unused, but the file must have it (the reference loads strictly)
    tensors["tfmr.h.0.attn.c_attn.weight"] = tensors["tfmr.h.0.attn.c_attn.weight"].t()  # (out, in): wrong
    tensors["tfmr.h.0.attn.bias"] = torch.zeros(1)  # HF's causal buffer: not in Turbo's file
    with pytest.raises(CheckpointError) as e:
        load_turbo_t3(_t3_file(tmp_path, tensors), t3_cfg)
    msg = str(e.value)
    assert "t3_turbo_v1.safetensors" in msg and "(3 problem(s))" in msg
    assert "missing key tfmr.wte.weight" in msg
    assert "tfmr.h.0.attn.c_attn.weight: shape [96, 32] but the model needs [32, 96]" in msg
    assert "unexpected key tfmr.h.0.attn.bias" in msg


def test_t3_of_another_size_is_refused(turbo_dir):
    with pytest.raises(CheckpointError, match="shape"):
        load_turbo_t3(turbo_dir / "t3_turbo_v1.safetensors", TurboT3Config.from_name("turbo-small"))


def test_base_s3gen_is_not_a_meanflow_file(recipe, tmp_path, meanflow_cfg):
    tensors = {k: v for k, v in recipe["s3gen_meanflow.safetensors"].items() if k != MIXER_KEY}
    path = tmp_path / "s3gen.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="base-model s3gen.safetensors, not Turbo's meanflow decoder"):
        load_meanflow_flow(path, meanflow_cfg)


def test_meanflow_loader_skips_only_the_other_parts(recipe, tmp_path, meanflow_cfg):
    tensors = dict(recipe["s3gen_meanflow.safetensors"])
    tensors["speaker_encoder.head.weight"] = torch.zeros(2, 2)  # voice cloning's part: skipped
    tensors["extra.weight"] = torch.zeros(2)  # nobody's: an error
    path = tmp_path / "s3gen_meanflow.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"\(1 problem\(s\)\):\n  unexpected key extra.weight$"):
        load_meanflow_flow(path, meanflow_cfg)


def test_conds_pt_turbo_shapes(t3_cfg, meanflow_cfg):
    from stages.cfm.conds import load_flow_conditionals

    c = load_case("t3_cond")
    t3 = load_turbo_t3_conditionals(TURBO_DIR / "conds.pt", t3_cfg)
    assert t3.cond_prompt_speech_tokens.shape == (1, 375) and t3.cond_prompt_speech_tokens.dtype == torch.int64
    assert torch.equal(t3.cond_prompt_speech_tokens, c["cond_prompt_speech_tokens"])
    assert torch.equal(t3.speaker_emb, c["speaker_emb"])
    gen = load_flow_conditionals(TURBO_DIR / "conds.pt", meanflow_cfg)
    assert gen.prompt_token.shape == (1, 40) and gen.prompt_feat.shape == (1, 80, 80)  # [1, 2P, 80]


def test_conds_pt_errors(tmp_path, t3_cfg):
    torch.save({"gen": {}}, tmp_path / "conds.pt")
    with pytest.raises(CheckpointError, match="expected a dict with a 't3' dict"):
        load_turbo_t3_conditionals(tmp_path / "conds.pt", t3_cfg)
    torch.save({"t3": {"speaker_emb": torch.zeros(1, 256), "cond_prompt_speech_tokens": torch.full((1, 5), 6561)}},
               tmp_path / "conds.pt")
    with pytest.raises(CheckpointError, match=r"cond_prompt_speech_tokens has ids outside \[0, 6561\)"):
        load_turbo_t3_conditionals(tmp_path / "conds.pt", t3_cfg)


# --- layout detection ----------------------------------------------------------------------------
def _folder(tmp_path, names):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for n in names:
        (tmp_path / n).write_bytes(b"")
    return tmp_path


def test_detection(tmp_path):
    assert detect_model(_folder(tmp_path / "base", CHATTERBOX_FILES)) == "chatterbox"
    assert detect_model(_folder(tmp_path / "turbo", TURBO_FILES)) == "turbo"
    # the HF turbo repo also ships a non-meanflow s3gen.safetensors: still Turbo
    assert detect_model(_folder(tmp_path / "turbo2", TURBO_FILES + ("s3gen.safetensors",))) == "turbo"


def test_both_layouts_need_an_explicit_model(tmp_path):
    both = _folder(tmp_path, CHATTERBOX_FILES + TURBO_FILES)
    with pytest.raises(AmbiguousCheckpointError, match="choose one with --model chatterbox|turbo"):
        detect_model(both)
    assert detect_model(both, "turbo") == "turbo"
    assert detect_model(both, "chatterbox") == "chatterbox"
    with pytest.raises(ValueError, match="model must be one of chatterbox, turbo, got 'nano'"):
        detect_model(both, "nano")


def test_detection_names_missing_files(tmp_path):
    partial = _folder(tmp_path / "p", [f for f in TURBO_FILES if f not in ("merges.txt", "conds.pt")])
    with pytest.raises(CheckpointError, match="turbo checkpoint directory is missing conds.pt, merges.txt"):
        detect_model(partial)
    with pytest.raises(CheckpointError, match="not a checkpoint directory: expected Chatterbox's t3_cfg.safetensors"):
        detect_model(_folder(tmp_path / "empty", []))
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        detect_model(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="chatterbox checkpoint directory is missing t3_cfg.safetensors"):
        detect_model(_folder(tmp_path / "t", TURBO_FILES), "chatterbox")


def test_turbo_folder_check_reads_the_voice_encoder(turbo_dir, tmp_path, recipe):
    check_turbo_checkpoint(turbo_dir)
    bad = dict(recipe)
    bad["ve.safetensors"] = {k: v for k, v in recipe["ve.safetensors"].items() if k != "proj.bias"}
    from tests.golden_turbo import write_turbo_checkpoint

    folder = write_turbo_checkpoint(tmp_path / "bad", bad)
    with pytest.raises(CheckpointError, match=r"ve.safetensors: .*\n  missing key proj.bias"):
        check_turbo_checkpoint(folder)
