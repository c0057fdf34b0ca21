"""Requests with a voice, on every interface: a stored voice by name, a recording made into a voice on the fly.

One multi-process pipeline (built-in tiny model) with its own voices folder serves the whole
module: the Python API, the wire (`say --connect`, a bare coordinator submit) and HTTP
(`tts-pipeline http --connect` in front of it). Every request uses the same fixed token count
and solver steps, so equal audio is exact equality.
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from ipc.schema import Audio, End, Error
from pipeline.api import Pipeline
from pipeline.audio_out import to_int16
from pipeline.cli import main
from pipeline.coordinator import RequestError
from pipeline.launcher import PipelineConfig
from pipeline.models import ModelSpec
from pipeline.voices import VoiceLibrary
from tests.golden import load_case

from .conftest import run_cli

TEXT = "Hello there."
TOKENS = 16
P = {"seed": 11, "ignore_eos": True, "max_new_tokens": TOKENS, "n_timesteps": 2}
CLI_P = ["--seed", "11", "--ignore-eos", "--max-new-tokens", str(TOKENS), "--n-timesteps", "2"]


def write_ref(path, case: str, sr: int):
    sf.write(str(path), load_case(case)["pcm16"].numpy(), sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    d = tmp_path_factory.mktemp("refs")
    return {"a": write_ref(d / "a.wav", "voice_clone_44k", 44100), "b": write_ref(d / "b.wav", "voice_clone_24k", 24000)}


@pytest.fixture(scope="module")
def vdir(tmp_path_factory, refs):
    """`voice add` (the real command, in-process): alice from a 44.1 kHz recording, bob from a 24 kHz one."""
    d = tmp_path_factory.mktemp("voices")
    for name, ref in (("alice", refs["a"]), ("bob", refs["b"])):
        r = CliRunner().invoke(main, ["voice", "add", name, str(ref), "--voices-dir", str(d), "--quiet"])
        assert r.exit_code == 0, r.output
    return d


@pytest.fixture(scope="module")
def tts(vdir):
    with Pipeline(PipelineConfig(model=ModelSpec(), threads=1, voices_dir=str(vdir))) as p:
        yield p


@pytest.fixture(scope="module")
def solo(tts):
    """Each voice's audio, one request at a time."""
    return {v: tts.synthesize(TEXT, **({"voice": v} if v else {}), **P) for v in ("alice", "bob", None)}


def collect(handle) -> tuple[np.ndarray, list[float]]:
    """A handle's audio and its chunks' send times (the stage's recorded timestamps)."""
    pcm, ts = [], []
    while True:
        msg = handle.sink.get(timeout=120)
        if isinstance(msg, Audio):
            pcm.append(np.asarray(msg.pcm, np.float32))
            ts.append(msg.ts)
        elif isinstance(msg, Error):
            raise RequestError(f"{msg.stage}: {msg.message}")
        elif isinstance(msg, End):
            return np.concatenate(pcm), ts


def test_stored_voice_equals_voice_file_equals_cli(tts, solo, refs, vdir):
    alice, default = solo["alice"], solo[None]
    assert alice.shape == (960 * TOKENS,) and not np.array_equal(alice, default)
    assert not np.array_equal(alice, solo["bob"])
    handle = tts.submit(TEXT, voice_file=str(refs["a"]), **P)
    assert handle.params["voice"].startswith("file-") and handle.notices == []
    assert np.array_equal(collect(handle)[0], alice)  # made here from the file = `voice add` then by name
    eps = tts.endpoints
    connect = ["--connect", eps["requests"], "--pub", eps["pub"], "--quiet", "--format", "f32le", *CLI_P]
    r = run_cli("say", *connect, "--voice", "alice", TEXT)
    assert r.returncode == 0, r.stderr.decode()
    assert np.array_equal(np.frombuffer(r.stdout, np.float32), alice)  # the stages loaded alice from the store
    shutil.rmtree(vdir / ".cache")  # so that process makes the voice again, in its own front end
    r = run_cli("say", *connect, "--voice-file", str(refs["a"]), "--voices-dir", str(vdir), TEXT)
    assert r.returncode == 0, r.stderr.decode()
    assert (vdir / ".cache" / handle.params["voice"] / "voice.json").is_file()
    assert np.array_equal(np.frombuffer(r.stdout, np.float32), alice)  # computed in that process, cached by content


def test_the_sequential_path_speaks_the_same_voice(vdir, solo):
    import torch

    from pipeline.sequential import Engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stage processes (threads=1): the same arithmetic
    try:
        engine = Engine(ModelSpec(), voices_dir=vdir)
        pcm = torch.cat([c.pcm for c in engine.stream(TEXT, {**P, "voice": "bob"})]).numpy()
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(pcm, solo["bob"])


def test_different_voices_in_flight_at_once_each_equal_their_solo_run(tts, solo):
    handles = {v: tts.submit(TEXT, **({"voice": v} if v else {}), **P) for v in ("alice", "bob", None)}
    bad = tts.coordinator.submit(TEXT, {**P, "voice": "carol"})  # past the API's check: T3 refuses it
    got = {v: collect(h) for v, h in handles.items()}
    for v, (pcm, _) in got.items():
        assert np.array_equal(pcm, solo[v]), v
    # they overlapped: each one's first chunk was sent before the others' last
    firsts, lasts = [ts[0] for _, ts in got.values()], [ts[-1] for _, ts in got.values()]
    assert max(firsts) < min(lasts)
    msg = bad[1].get(timeout=60)
    assert isinstance(msg, Error) and msg.stage == "t3" and "unknown voice 'carol'" in msg.message


def test_unknown_voice_fails_before_any_request(tts, vdir):
    before = len(tts.coordinator.records)
    with pytest.raises(ValueError, match=r"unknown voice 'carol' in .* \(known: default, alice, bob\)"):
        tts.stream(TEXT, voice="carol", **P)
    with pytest.raises(ValueError, match="invalid voice name '../x'"):
        tts.stream(TEXT, voice="../x", **P)
    with pytest.raises(ValueError, match="give voice or voice_file, not both"):
        tts.stream(TEXT, voice="alice", voice_file="x.wav", **P)
    assert len(tts.coordinator.records) == before


def test_a_re_recorded_voice_is_never_served_stale(tts, solo, vdir):
    lib = VoiceLibrary(vdir)
    try:
        lib.add("carl", lib.store.load("alice"), {})
        assert np.array_equal(tts.synthesize(TEXT, voice="carl", **P), solo["alice"])
        lib.add("carl", lib.store.load("bob"), {}, force=True)  # the same name, another voice: a new content hash
        assert np.array_equal(tts.synthesize(TEXT, voice="carl", **P), solo["bob"])
    finally:
        lib.remove("carl")


def test_exaggeration_is_the_stored_voices_unless_the_request_gives_one(tts, vdir, solo):
    lib = VoiceLibrary(vdir)
    alice = lib.store.load("alice")
    lib.add("eve", dataclasses.replace(alice, emotion_adv=torch.full((1, 1, 1), 0.9)), {})  # `voice add --exaggeration 0.9`
    try:
        eve = tts.synthesize(TEXT, voice="eve", **P)
        assert not np.array_equal(eve, solo["alice"])  # same recording, its own exaggeration
        assert np.array_equal(tts.synthesize(TEXT, voice="alice", exaggeration=0.9, **P), eve)
        assert np.array_equal(tts.synthesize(TEXT, voice="eve", exaggeration=0.5, **P), solo["alice"])
    finally:
        lib.remove("eve")


# --- bad recordings at request time ------------------------------------------------------------------
def tone(seconds: float, sr: int = 24000, peak: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (peak * np.sin(2 * np.pi * 150 * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


def bad_files(d):
    text = d / "notes.wav"
    text.write_text("not audio at all\n")
    empty = d / "empty.wav"
    empty.write_bytes(b"")
    silent = d / "silent.wav"
    sf.write(str(silent), np.zeros(48000, np.float32), 24000)
    short = d / "short.wav"
    sf.write(str(short), tone(0.4), 24000)
    nan = d / "nan.wav"
    x = tone(2.0)
    x[100] = np.nan
    sf.write(str(nan), x, 24000, subtype="FLOAT")
    return [(text, "not an audio file soundfile can read"), (empty, "not an audio file soundfile can read"),
            (silent, "is silent (peak -inf dBFS, below -60 dBFS)"),
            (short, "is 0.40 s long; a voice needs at least 1 s of speech"),
            (nan, "holds NaN or infinite samples (first at 0.004 s)"),
            (d / "missing.wav", "no such file"), (d, "is a directory, not an audio file")]


def test_each_bad_recording_fails_before_any_request_naming_the_file(tts, tmp_path):
    before = len(tts.coordinator.records)
    for path, message in bad_files(tmp_path):
        with pytest.raises(ValueError) as e:
            tts.stream(TEXT, voice_file=str(path), **P)
        assert str(e.value) == f"{path}: {message}" or str(e.value).startswith(f"{path}: {message}"), e.value
    assert len(tts.coordinator.records) == before


def test_a_too_long_recording_is_cut_with_a_notice(tts, tmp_path, monkeypatch):
    import pipeline.voices as pv

    real = pv.voice_config_of

    def short_limit(spec):  # the limit at 4 s instead of 60 (tests/stages/voice covers the real one): a short test
        cfg, prompt_len = real(spec)
        return dataclasses.replace(cfg, max_seconds=4.0), prompt_len

    monkeypatch.setattr(pv, "voice_config_of", short_limit)
    long = tmp_path / "long.wav"
    sf.write(str(long), tone(5.0, 16000), 16000)
    handle = tts.submit(TEXT, voice_file=str(long), **P)
    assert len(collect(handle)[0]) == 960 * TOKENS
    assert handle.notices == [f"{long}: is 5.0 s long; using its first 4 s (the prompts take the first 10 s, "
                              "the speaker embedding the whole clip)"]
    again = tts.submit(TEXT, voice_file=str(long), **P)  # found in the cache: the notice still comes
    assert again.params["voice"] == handle.params["voice"]
    assert again.notices == [f"{long}: is 5.0 s long; using its first 4 s"]
    collect(again)


def test_say_reports_a_bad_voice_before_loading_anything(tmp_path, vdir):
    runner = CliRunner()
    for path, message in bad_files(tmp_path)[:2]:
        r = runner.invoke(main, ["say", "--sequential", "--voices-dir", str(vdir), "--voice-file", str(path), TEXT])
        assert r.exit_code == 1 and f"{path}: {message}" in r.stderr and "loading" not in r.stderr
    r = runner.invoke(main, ["say", "--sequential", "--voices-dir", str(vdir), "--voice", "carol", TEXT])
    assert r.exit_code == 1 and "unknown voice 'carol'" in r.stderr and "loading" not in r.stderr
    r = runner.invoke(main, ["say", "--voices-dir", str(vdir), "--voice", "alice", "--voice-file", "x.wav", TEXT])
    assert r.exit_code == 1 and "give --voice or --voice-file, not both" in r.stderr


# --- HTTP ----------------------------------------------------------------------------------------------
def test_http_speaks_stored_voices_and_lists_them(tts, solo, vdir):
    from websockets.sync.client import connect

    from .http.conftest import Server
    from .http.test_websocket import read_request

    eps = tts.endpoints
    server = Server("--connect", eps["requests"], "--pub", eps["pub"], "--voices-dir", str(vdir))
    try:
        listed = httpx.get(f"{server.url}/v1/audio/voices", timeout=30).json()
        assert [v["id"] for v in listed["voices"]] == ["default", "alice", "bob"] and listed["default"] == "default"
        assert listed["voices"][1]["exaggeration"] == 0.5 and listed["voices"][1]["aliases"] == []
        body = {"input": TEXT, "voice": "alice", "response_format": "pcm", **P}
        r = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)
        assert r.status_code == 200 and r.content == to_int16(solo["alice"]).tobytes()
        r = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "voice": "carol"}, timeout=30)
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "voice" and "voice 'carol' is not available" in err["message"]
        assert "default, alice, bob" in err["message"]
        with connect(server.url.replace("http://", "ws://") + "/v1/audio/stream") as ws:
            ws.send(json.dumps({"type": "request", "id": "w", "input": TEXT, "voice": "bob", **P}))
            _, _, pcm, end = read_request(ws)
            assert end["type"] == "end" and pcm == to_int16(solo["bob"]).tobytes()
    finally:
        server.stop()
