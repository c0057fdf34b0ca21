"""A live `tts-pipeline http` on a loopback port (built-in tiny model), and the CLI's bytes to compare it with.

Each test module that needs a server starts its own (module-scoped fixtures), so metric
counts in one module are not moved by another. The server is waited for by its own
stderr lines (`listening on ...`, `ready: ...`), never by sleeping.
"""
from __future__ import annotations

import functools
import os
import select
import subprocess
import threading
import time

import pytest

from ..conftest import CLI, children_of, run_cli

START_TIMEOUT_S = 120.0  # three stage processes import torch and warm up; a loaded 2-core machine is slow
TEXT = "Hello from the HTTP server."
SEED = 7
TOKENS = 40  # every exact-bytes check uses this one request, so the CLI runs once per module
FAST = {"n_timesteps": 2}  # byte counts and plumbing do not depend on the solver's step count


class Server:
    """`tts-pipeline http --port 0 ARGS...`, its stderr collected by a thread (never left to fill the pipe)."""

    def __init__(self, *args: str, wait_ready: bool = True):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([*CLI, "http", "--port", "0", "--threads", "1", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.listening, self.ready = threading.Event(), threading.Event()
        self.url: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.listening.wait(START_TIMEOUT_S) or self.url is None:
            self.stop(check=False)
            raise RuntimeError("the server did not start listening:\n" + self.log())
        if wait_ready:
            self.wait_ready()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("listening on "):
                self.url = line.split()[-1]
                self.listening.set()
            elif line.startswith("ready: "):
                self.ready.set()
        self.listening.set()  # the process ended: unblock waiters

    def wait_ready(self) -> None:
        if not self.ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the pipeline did not become ready:\n" + self.log())

    def log(self) -> str:
        return "".join(self.lines)

    def stage_pids(self) -> list[int]:
        return children_of(self.proc.pid)

    def stop(self, check: bool = True) -> None:
        """SIGTERM; with check, assert a clean exit (code 0) and that no stage process outlives it."""
        kids = self.stage_pids() if self.proc.poll() is None else []
        self.proc.terminate()
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(10)
        if check:
            assert code == 0, f"exit code {code}:\n{self.log()}"
            assert self.proc.stdout.read() == "", "the server wrote to stdout"
            wait_gone(kids)
            assert "Traceback" not in self.log(), self.log()


def wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    """Each process has ended (a pidfd becomes readable when it does), within `timeout`."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            assert select.select([fd], [], [], timeout)[0], f"process {pid} outlived the server"
        finally:
            os.close(fd)


@functools.lru_cache(maxsize=None)
def cli_pcm(text: str, seed: int, tokens: int) -> bytes:
    """`tts-pipeline say --format s16le` of the same request: the bytes every endpoint must equal."""
    r = run_cli("say", "--quiet", "--format", "s16le", "--seed", str(seed), "--ignore-eos", "--max-new-tokens",
                str(tokens), "--n-timesteps", str(FAST["n_timesteps"]), text)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def speech_body(tokens: int, **extra) -> dict:
    return {"model": "chatterbox", "input": TEXT, "voice": "default", "seed": SEED, "ignore_eos": True,
            "max_new_tokens": tokens, **FAST, **extra}


# Chatterbox Turbo (built-in turbo-tiny, tests/pipeline/http/test_turbo.py and test_connect.py)
TURBO_TOKENS = 6
TAIL_TOKENS = 3  # the silence tokens Turbo's generate appends, decoded too (README, Models)
TURBO_BYTES = 2 * 960 * (TURBO_TOKENS + TAIL_TOKENS)  # s16le
TURBO_FAST = {"n_timesteps": 1, "prompt_tokens": 8}  # lengths and validation do not depend on the flow's cost


def turbo_body(**extra) -> dict:
    return {"input": TEXT, "seed": SEED, "ignore_eos": True, "max_new_tokens": TURBO_TOKENS, "response_format": "pcm",
            **TURBO_FAST, **extra}


def metric(url: str, name: str, **labels) -> float | None:
    """One sample of /metrics (None when absent)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value, with a deadline (the server's state changes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # a poll interval, not a wait for something to happen


@pytest.fixture(scope="module")
def server():
    s = Server()
    try:
        yield s
    finally:
        s.stop()
