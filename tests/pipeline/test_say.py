"""`say`: stdin read as it arrives (a FIFO), long text through every mode, output formats, feedback on stderr."""
import io
import os
import select
import subprocess
import time

import numpy as np
import pytest
import soundfile

from .conftest import CLI, run_cli

FAST = ["--n-timesteps", "2"]
TOKENS = ["--ignore-eos", "--max-new-tokens", "3", "--seed", "4", *FAST]
LONG = " ".join(f"Sentence {i} of this text runs on for a while." for i in range(8))  # several segments
DEADLINE_S = 120  # for reading a child's output: fail, never hang


def reference(text: str) -> bytes:
    """s16le bytes of one utterance from the single-process engine in this process (the CLI's stages run 1 thread)."""
    import torch

    from pipeline.audio_out import to_int16
    from pipeline.models import ModelSpec
    from pipeline.sequential import Engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        params = {"ignore_eos": True, "max_new_tokens": 3, "seed": 4, "n_timesteps": 2}
        return b"".join(to_int16(c.pcm.numpy()).tobytes() for c in Engine(ModelSpec()).stream(text, params))
    finally:
        torch.set_num_threads(threads)  # later test modules compute in this process with its own thread count


def read_exactly(fd, n, deadline):
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out with {len(data)} of {n} bytes"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, n - len(data))
            assert chunk, f"EOF after {len(data)} of {n} bytes"
            data += chunk
    return data


def test_stdin_lines_are_spoken_as_they_arrive(tmp_path):
    """A FIFO: the first line's audio is all out before the second line is even written."""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open both ends without blocking
    wfd = os.open(fifo, os.O_WRONLY)
    os.set_blocking(rfd, True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*CLI, "say", *TOKENS, "--sentence-silence", "0.1"], stdin=rfd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.close(rfd)
    try:
        deadline = time.monotonic() + DEADLINE_S
        os.write(wfd, b"The first line.\n")
        first = read_exactly(proc.stdout.fileno(), 2 * 960 * 3, deadline)  # all of line 1, with the pipe still open
        os.write(wfd, b"The second line.\n")
        os.close(wfd)
        wfd = None
        rest = proc.stdout.read()
        assert proc.wait(DEADLINE_S) == 0, proc.stderr.read().decode()
    finally:
        if wfd is not None:
            os.close(wfd)
        proc.kill() if proc.poll() is None else None
    assert len(rest) == 2 * (2400 + 960 * 3)  # the pause before line 2, then line 2
    assert not any(rest[:4800])
    assert first == reference("The first line.")
    err = proc.stderr.read().decode()
    assert "[1]" in err and "[2/2]" in err and "first audio after" in err and "RTF" in err


def test_long_text_in_every_mode_gives_the_same_samples_and_exact_totals(tmp_path):
    args = ["say", *TOKENS, "--sentence-silence", "0.05", "--format", "f32le", LONG]
    mp, seq = run_cli(*args), run_cli(*args, "--sequential")
    assert mp.returncode == 0 and seq.returncode == 0, (mp.stderr, seq.stderr)
    import re

    n = int(re.search(r"in (\d+) segment", mp.stderr.decode()).group(1))
    assert n > 2
    assert len(mp.stdout) == 4 * (n * 3 * 960 + (n - 1) * 1200) and mp.stdout == seq.stdout
    assert "loading" in mp.stderr.decode() and "ready in" in mp.stderr.decode()


def test_a_text_file_is_pipelined_line_by_line_into_one_file(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("Line one.\n\nLine two, a bit longer.\nLine three.\n")
    out = tmp_path / "book.flac"
    r = run_cli("say", *TOKENS, "--text-file", str(book), "-o", str(out), "--max-inflight", "3")
    assert r.returncode == 0 and r.stdout == b"", r.stderr.decode()
    data, sr = soundfile.read(str(out), dtype="int16")
    assert sr == 24000 and len(data) == 3 * 3 * 960 + 2 * 4800
    pause = bytes(2 * 4800)
    assert data.tobytes() == pause.join(reference(t) for t in ("Line one.", "Line two, a bit longer.", "Line three."))
    assert "[3/3]" in r.stderr.decode()


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_wav_and_flac_to_stdout(fmt):
    r = run_cli("say", "--sequential", *TOKENS, "--format", fmt, "-o", "-", "Streamed out.")
    assert r.returncode == 0, r.stderr.decode()
    raw = reference("Streamed out.")
    if fmt == "wav":
        assert r.stdout[:4] == b"RIFF" and r.stdout[4:8] == b"\xff\xff\xff\xff"
        data, sr = soundfile.read(io.BytesIO(r.stdout), dtype="int16")
        assert sr == 24000 and data.tobytes() == raw
    else:
        from .test_audio_out import read_flac_stream

        pcm = read_flac_stream(r.stdout)
        assert np.array_equal(np.rint(pcm * 32768).astype("<i2").tobytes(), raw)


@pytest.mark.parametrize("suffix", [".ogg", ".opus", ".mp3"])
def test_each_file_format_has_the_right_rate_and_length(tmp_path, suffix):
    out = tmp_path / f"a{suffix}"
    r = run_cli("say", "--sequential", *TOKENS, "-o", str(out), "Hello there.")
    assert r.returncode == 0, r.stderr.decode()
    data, sr = soundfile.read(str(out))
    assert sr == 24000 and len(data) == 3 * 960


@pytest.mark.parametrize("args,message", [
    (["--format", "f32le", "-o", "x.flac"], "FLAC holds integer samples"),
    (["--format", "mp3"], "cannot be streamed to a pipe"),
    (["-o", "x.aiff"], "must end in"),
    (["--sentence-silence", "-1"], "sentence_silence"),
    (["--text-file", "/dev/null"], "no text given"),
])
def test_output_and_input_errors_come_before_anything_starts(tmp_path, args, message):
    r = subprocess.run([*CLI, "say", *args, "Hi."] if "--text-file" not in args else [*CLI, "say", *args],
                       capture_output=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0 and r.stdout == b"" and message in r.stderr.decode()
    assert "loading" not in r.stderr.decode() and not list(tmp_path.iterdir())


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_a_progress_bar_over_the_segments_on_a_terminal_and_nothing_with_quiet(monkeypatch, quiet):
    import sys

    from pipeline.longform import Audio, Finished, Unit
    from pipeline.say import Feedback

    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    logged = []
    feedback = Feedback(logged.append, quiet=quiet)
    feedback.planned(5)  # one long-form line of 5 segments, run as one request
    unit = Unit(0, 0, 1, "x" * 40, {}, segments=5)
    feedback.item(Audio(unit, np.zeros(24_000, np.float32)), None)
    feedback.item(Finished(unit, 24_000, submit_t=10.0, first_t=10.5, end_t=12.0, stats={}), 1)
    if quiet:
        feedback.close()
        assert feedback.bar is None and err.getvalue() == "" and logged == []
        return
    assert feedback.bar.n == feedback.bar.total == 5
    feedback.close()
    out = err.getvalue()
    assert "0/5" in out and "seg" in out  # the bar, drawn on the terminal
    assert "[1/1] 40 chars in 5 segment(s): first audio after 0.50 s, 1.00 s of audio in 2.00 s (RTF 2.00)" in out
    assert logged == []  # on a terminal the lines go above the bar, not through the plain log
