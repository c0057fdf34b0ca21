"""`tts-pipeline voice add|list|rm`: the happy path through the real CLI, and every bad input's message.

Bad inputs run in-process (click's runner) with the model loader replaced by one that fails
the test: each error must come before any model is loaded.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from pipeline.cli import main
from tests.golden import load_case

from .conftest import run_cli

SR = 24000


def tone(seconds: float, sr: int = SR, peak: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (peak * np.sin(2 * np.pi * 150 * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


@pytest.fixture
def ref(tmp_path):
    path = tmp_path / "ref.wav"
    sf.write(str(path), load_case("voice_clone_44k")["pcm16"].numpy(), 44100, subtype="PCM_16")
    return path


def test_add_list_rm_through_the_real_cli(tmp_path, ref):
    vdir = str(tmp_path / "voices")
    r = run_cli("voice", "add", "alice", str(ref), "--exaggeration", "0.7", "--voices-dir", vdir)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"" and "voice 'alice' added" in r.stderr.decode() and "43 T3 / 43 flow prompt tokens" in r.stderr.decode()
    r = run_cli("voice", "list", "--voices-dir", vdir, "--json")
    listed = json.loads(r.stdout)
    assert [v["name"] for v in listed["voices"]] == ["alice"] and listed["voices"][0]["exaggeration"] == 0.7
    assert listed["voices"][0]["source"]["sample_rate"] == 44100
    r = invoke("voice", "list", "--voices-dir", vdir)
    assert r.exit_code == 0 and [line.split()[0] for line in r.stdout.splitlines()] == ["NAME", "default", "alice"]
    r = invoke("voice", "rm", "alice", "--voices-dir", vdir)
    assert r.exit_code == 0 and "removed voice 'alice'" in r.stderr
    assert invoke("voice", "list", "--voices-dir", vdir, "--json").stdout.count('"name"') == 0


@pytest.fixture
def no_models(monkeypatch):
    """Any attempt to load the conditioning models fails the test (errors must come first)."""
    import stages.voice.checkpoint as ckpt

    def refuse(*a, **k):
        raise AssertionError("the models were loaded before the input was checked")

    monkeypatch.setattr(ckpt, "load_voice_models", refuse)


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def make(tmp_path, kind: str):
    p = tmp_path / "ref.wav"
    if kind == "text":
        p.write_text("not audio")
    elif kind == "empty":
        sf.write(str(p), np.zeros(0, np.float32), SR)
    elif kind == "silent":
        sf.write(str(p), np.zeros(2 * SR, np.float32), SR)
    elif kind == "short":
        sf.write(str(p), tone(0.4), SR)
    elif kind == "nan":
        x = tone(2.0)
        x[100] = np.nan
        sf.write(str(p), x, SR, subtype="FLOAT")
    elif kind == "missing":
        pass
    return str(p)


@pytest.mark.parametrize("kind,message", [
    ("text", "ref.wav: not an audio file soundfile can read"),
    ("empty", "ref.wav: the file holds no audio samples"),
    ("silent", "ref.wav: is silent (peak -inf dBFS"),
    ("short", "ref.wav: is 0.40 s long; a voice needs at least 1 s of speech"),
    ("nan", "ref.wav: holds NaN or infinite samples (first at 0.004 s)"),
    ("missing", "ref.wav: no such file"),
])
def test_bad_recordings(tmp_path, no_models, kind, message):
    r = invoke("voice", "add", "v", make(tmp_path, kind), "--voices-dir", str(tmp_path / "voices"))
    assert r.exit_code == 1 and message in r.stderr and r.stdout == ""
    assert not (tmp_path / "voices").exists()  # nothing written


@pytest.mark.parametrize("args,message", [
    (["voice", "add", "no/slash", "REF"], "invalid voice name 'no/slash'"),
    (["voice", "add", "default", "REF"], "'default' is the model's own voice"),
    (["voice", "add", "v", "REF", "--exaggeration", "-1"], "exaggeration must be a finite number >= 0, got -1.0"),
    (["voice", "add", "v", "REF", "--exaggeration", "nan"], "exaggeration must be a finite number >= 0"),
    (["voice", "add", "v", "REF", "--checkpoint", "CKPT"], "voice cloning needs ve.safetensors, s3gen.safetensors"),
    (["voice", "add", "v", "REF", "--preset", "turbo-tiny"], "ref.wav: is 1.72 s long; a voice needs more than 5 s of speech"),
    (["voice", "add", "v", "REF", "--preset", "turbo-tiny", "--model", "chatterbox"],
     "--model chatterbox does not match the built-in preset 'turbo-tiny'"),
    (["voice", "add", "v", "REF", "--checkpoint", "TURBO"], "voice cloning needs ve.safetensors, s3gen_meanflow.safetensors"),
    (["voice", "add", "v", "REF", "--checkpoint", "BOTH"], "holds both the Chatterbox and the Chatterbox Turbo layout; "
                                                          "choose the voice's model with --model chatterbox|turbo"),
    (["voice", "rm", "nobody"], "unknown voice 'nobody'"),
    (["voice", "rm", "default"], "cannot be removed"),
])
def test_bad_names_and_options(tmp_path, ref, no_models, args, message):
    dirs = {"CKPT": [], "TURBO": ["t3_turbo_v1.safetensors"], "BOTH": ["t3_cfg.safetensors", "t3_turbo_v1.safetensors"]}
    for d, files in dirs.items():  # checkpoint folders: an empty one, a Turbo T3 alone, both T3 files
        (tmp_path / d).mkdir()
        for f in files:
            (tmp_path / d / f).write_bytes(b"")
    args = [str(ref) if a == "REF" else str(tmp_path / a) if a in dirs else a for a in args]
    r = invoke(*args, "--voices-dir", str(tmp_path / "voices"))
    assert r.exit_code == 1 and message in r.stderr


def test_a_taken_name_fails_before_reading_the_recording(tmp_path, no_models):
    from pipeline.voices import VoiceLibrary
    from tests.stages.voice.test_store import make_voice

    VoiceLibrary(tmp_path / "voices").add("taken", make_voice(), {})
    r = invoke("voice", "add", "taken", make(tmp_path, "text"), "--voices-dir", str(tmp_path / "voices"))
    assert r.exit_code == 1 and "voice 'taken' already exists" in r.stderr and "not an audio file" not in r.stderr


def test_a_long_recording_is_cut_with_a_notice(tmp_path):
    sf.write(str(tmp_path / "long.wav"), tone(61.0, sr=16000), 16000)
    r = invoke("voice", "add", "long", str(tmp_path / "long.wav"), "--voices-dir", str(tmp_path / "voices"), "-q")
    assert r.exit_code == 0, r.stderr
    assert "notice: " in r.stderr and "long.wav: is 61.0 s long; using its first 60 s" in r.stderr
    manifest = json.loads((tmp_path / "voices" / "long" / "voice.json").read_text())
    assert manifest["source"]["seconds"] == 61.0 and manifest["source"]["used_seconds"] == 60.0


def test_force_replaces(tmp_path, ref):
    vdir = str(tmp_path / "voices")
    assert invoke("voice", "add", "v", str(ref), "--voices-dir", vdir, "-q").exit_code == 0
    r = invoke("voice", "add", "v", str(ref), "--voices-dir", vdir, "--exaggeration", "1.5", "--force", "-q")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((tmp_path / "voices" / "v" / "voice.json").read_text())
    assert manifest["exaggeration"] == 1.5
