"""Which model runs: a Turbo checkpoint folder is detected and loaded by every stage's loader, a folder holding
both layouts needs --model, the built-in turbo presets are Turbo, and `info` names the model."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.sequential import Engine
from stages.common.layout import CHATTERBOX_FILES, AmbiguousCheckpointError
from stages.common.spec import ModelSpec
from stages.common.weights import CheckpointError
from tests.golden import GOLDEN_DIR

ROOT = Path(__file__).resolve().parents[3]


def test_a_turbo_folder_is_detected_and_runs_end_to_end(turbo_dir):
    spec = ModelSpec(checkpoint=turbo_dir)
    assert spec.kind == "turbo" and spec.resolved().model == "turbo"
    engine = Engine(spec)
    assert type(engine.t3).__name__ == "TurboT3Part" and engine.cfm.tail_tokens == (4299, 4299, 4299)
    wav = engine.stream("Hello world.", {"seed": 1, "ignore_eos": True, "max_new_tokens": 5, "n_timesteps": 1})
    assert sum(c.pcm.numel() for c in wav) == 960 * 8


def test_a_folder_with_both_layouts_needs_model(turbo_dir, tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    for f in turbo_dir.iterdir():
        (both / f.name).symlink_to(f)
    for name in CHATTERBOX_FILES:  # detection reads which files exist; the loaders read them
        if not (both / name).exists():
            (both / name).write_bytes(b"")
    with pytest.raises(AmbiguousCheckpointError, match="choose one with --model chatterbox\\|turbo"):
        ModelSpec(checkpoint=both).check()
    assert ModelSpec(checkpoint=both, model="turbo").check().kind == "turbo"
    assert ModelSpec(checkpoint=both, model="chatterbox").check().kind == "chatterbox"
    with pytest.raises(ValueError, match="model must be one of chatterbox, turbo, got 'nano'"):
        ModelSpec(checkpoint=both, model="nano").check()


def test_presets_name_their_family():
    assert ModelSpec(preset="turbo-small").kind == "turbo" and ModelSpec(preset="small").kind == "chatterbox"
    with pytest.raises(ValueError, match="--model chatterbox does not match the built-in preset 'turbo-tiny'"):
        ModelSpec(preset="turbo-tiny", model="chatterbox").check()
    with pytest.raises(CheckpointError, match="turbo checkpoint directory is missing t3_turbo_v1.safetensors"):
        ModelSpec(checkpoint=GOLDEN_DIR, model="turbo").check()  # the base golden folder lacks Turbo's files


def test_info_names_the_model_and_its_schedule_defaults(turbo_dir):
    out = subprocess.run([sys.executable, str(ROOT / "bin" / "tts-pipeline"), "info", "--checkpoint", str(turbo_dir)],
                         capture_output=True, text=True, timeout=120, check=True)
    info = json.loads(out.stdout)
    assert info["model"]["name"] == "turbo" and "Chatterbox Turbo" in info["model"]["description"]
    assert info["schedule_defaults"]["n_timesteps"] == 2
