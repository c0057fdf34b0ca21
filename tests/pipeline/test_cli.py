"""The `tts-pipeline` CLI: exact byte counts, identical modes, clear errors, and server mode."""
import json
import re
import subprocess

import pytest

from .conftest import CLI, ROOT, run_cli

FAST = ["--n-timesteps", "2"]


@pytest.mark.parametrize("n", [1, 2, 7])
def test_say_writes_exactly_4_x_960_x_n_bytes(n):
    r = run_cli("say", "--ignore-eos", "--max-new-tokens", str(n), "--format", "f32le", "--seed", "3", *FAST, "Hello world.")
    assert r.returncode == 0, r.stderr.decode()
    assert len(r.stdout) == 4 * 960 * n
    err = r.stderr.decode()
    assert "24000 Hz" in err and "built-in random-weight model" in err


def test_sequential_is_byte_identical_to_multiprocess(tmp_path):
    args = ["say", "--ignore-eos", "--max-new-tokens", "40", "--seed", "9", *FAST, "Same bytes please."]
    mp, seq = run_cli(*args), run_cli(*args, "--sequential")
    assert mp.returncode == 0 and seq.returncode == 0, (mp.stderr, seq.stderr)
    assert len(mp.stdout) == 2 * 960 * 40 and mp.stdout == seq.stdout
    wav = tmp_path / "out.wav"
    r = run_cli(*args, "--output-file", str(wav))
    import soundfile

    data, sr = soundfile.read(str(wav), dtype="int16")
    assert sr == 24000 and data.tobytes() == mp.stdout and r.stdout == b""


def test_lines_on_stdin_are_separate_utterances():
    r = run_cli("say", "--ignore-eos", "--max-new-tokens", "3", *FAST, input=b"One.\n\nTwo.\nThree.\n")
    assert r.returncode == 0 and len(r.stdout) == 3 * 2 * 960 * 3 + 2 * 2 * 4800  # 0.2 s between lines
    assert "[3/3]" in r.stderr.decode()


@pytest.mark.parametrize("args,stdin,message", [
    (["   "], None, "text is empty"),
    (["--temperature", "0", "Hi."], None, "temperature must be > 0"),
    (["--first-chunk-tokens", "0", "Hi."], None, "first_chunk_tokens"),
    ([], b"\xff\xfe oops\n", "not valid UTF-8"),
    (["--checkpoint", "/nonexistent/dir", "Hi."], None, "checkpoint directory not found"),
    (["--max-new-tokens", "0", "Hi."], None, "max_new_tokens"),
])
def test_bad_input_is_a_clear_error_and_no_audio(args, stdin, message):
    r = run_cli("say", *FAST, *args, input=stdin)
    assert r.returncode != 0
    assert r.stdout == b""
    assert message in r.stderr.decode()


def test_malformed_checkpoint_names_the_file(tmp_path):
    import glob

    for name in ("t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt"):
        (tmp_path / name).write_bytes(b"not a real file")
    r = run_cli("say", "Hi.", "--checkpoint", str(tmp_path))  # the tokenizer is read first, to segment the text
    assert r.returncode != 0 and r.stdout == b"" and f"{tmp_path}/tokenizer.json: not a readable" in r.stderr.decode()
    (tmp_path / "tokenizer.json").write_bytes((ROOT / "stages/t3/data/builtin_tokenizer.json").read_bytes())
    import os
    import shutil
    import tempfile

    run_base = tempfile.mkdtemp(prefix="t-", dir="/tmp")  # short: the run dir goes here, apart from other runs on the machine
    try:
        r = subprocess.run([*CLI, "say", "Hi.", "--checkpoint", str(tmp_path)], capture_output=True, timeout=120,
                           env={**os.environ, "TMPDIR": run_base})
        assert r.returncode != 0 and r.stdout == b""
        assert "failed to start" in r.stderr.decode() and str(tmp_path) in r.stderr.decode()
        assert glob.glob(f"{run_base}/tts-*") == []  # a failed start leaves no endpoint files either
    finally:
        shutil.rmtree(run_base, ignore_errors=True)


def test_info_is_json():
    import json

    r = run_cli("info")
    info = json.loads(r.stdout)
    assert info["sample_rate"] == 24000 and info["formats"] == ["s16le", "f32le", "wav", "flac", "ogg", "opus", "mp3"] and info["model"]["builtin"]


def test_server_mode_bad_request_then_good_request():
    server = subprocess.Popen([*CLI, "serve", "--threads", "1"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        endpoints = {}
        for line in server.stderr:
            m = re.match(rb"(requests|publish): (\S+)", line)
            if m:
                endpoints[m.group(1).decode()] = m.group(2).decode()
            if len(endpoints) == 2:
                break
        connect = ["--connect", endpoints["requests"], "--pub", endpoints["publish"]]
        bad = run_cli("say", *connect, "--top-p", "1.5", "Bad.")
        assert bad.returncode != 0 and "top_p" in bad.stderr.decode() and bad.stdout == b""
        # a subscriber to every request, welcomed before the request is sent
        sub = subprocess.Popen([*CLI, "subscribe", endpoints["publish"], "--pcm"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert b"subscribed to every request" in sub.stderr.readline()
            good = run_cli("say", *connect, "--ignore-eos", "--max-new-tokens", "5", "--seed", "2", *FAST, "Good.")
            assert good.returncode == 0, good.stderr.decode()
            heads = []
            for line in sub.stderr:  # one JSON header per published message, up to this request's end
                heads.append(json.loads(line))
                if heads[-1]["kind"] == "end":
                    break
        finally:
            sub.terminate()
            published = sub.communicate(timeout=20)[0]
        local = run_cli("say", "--ignore-eos", "--max-new-tokens", "5", "--seed", "2", *FAST, "Good.")
        assert good.stdout == local.stdout == published and len(good.stdout) == 2 * 960 * 5
        assert [h["kind"] for h in heads][-1] == "end" and heads[-1]["totals"]["samples"] == 960 * 5
        assert all(h["kind"] == "audio" for h in heads[:-1]) and [h["seq"] for h in heads] == list(range(len(heads)))
    finally:
        server.terminate()
        assert server.wait(20) is not None
