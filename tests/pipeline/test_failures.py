"""Failure and shutdown: a dead stage fails every in-flight request fast and is restarted (within a budget);
close() fails what is left with `shutting down`; SIGTERM leaves nothing behind."""
import glob
import os
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.api import Pipeline
from pipeline.coordinator import RequestError
from pipeline.launcher import STAGES, PipelineConfig
from pipeline.models import ModelSpec

from .conftest import CLI, FAST, children_of

DEATH_DEADLINE_S = 2.0  # every in-flight request must fail within this long of a stage dying


def resources() -> dict[str, int]:
    """What a restart could leak in this (the launching) process: stage processes, open fds, threads."""
    status = Path("/proc/self/status").read_text()
    return {"processes": len(children_of(os.getpid())), "fds": len(os.listdir("/proc/self/fd")),
            "threads": int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))}


def wait_state(tts, state: str, timeout: float = 120.0) -> dict:
    """Poll Pipeline.status() until it reports `state` (a restart re-imports torch and reloads: seconds)."""
    deadline = time.monotonic() + timeout
    while (st := tts.status())["state"] != state:
        assert time.monotonic() < deadline, f"still {st['state']} ({st['reason']}) after {timeout} s"
        time.sleep(0.05)  # a poll interval, not a wait for something to happen
    return st


def test_a_killed_stage_fails_its_requests_fast_comes_back_and_the_budget_ends_it():
    """Sized for the suite: one kill per stage (the issue's 5 cycles each would take minutes on 2 cores)."""
    config = PipelineConfig(model=ModelSpec(), threads=1, restart_budget=len(STAGES), restart_window_s=3600.0)
    with Pipeline(config) as tts:
        reference = tts.synthesize("Same again.", seed=5, **FAST)  # what a fresh server makes for this seed
        baseline = resources()
        for stage in STAGES:
            pid = tts.supervisor.pids()[stage]
            its = [tts.stream("A long one.", seed=seed, ignore_eos=True, max_new_tokens=1400, **FAST) for seed in (1, 2)]
            for it in its:
                next(it)  # both mid-request: audio is flowing
            os.kill(pid, signal.SIGKILL)
            t0 = time.monotonic()
            for it in its:
                with pytest.raises(RequestError, match=rf"stage {stage} \(pid {pid}\) died \(exit code -9\)"):
                    for _ in it:
                        pass
            assert time.monotonic() - t0 < DEATH_DEADLINE_S
            # while it restarts (seconds: torch is imported and the model loaded again) requests are refused clearly
            with pytest.raises(RequestError, match=rf"^restarting: stage {stage} \(pid {pid}\) died"):
                tts.synthesize("Meanwhile.", **FAST)
            assert tts.status()["state"] == "restarting"
            st = wait_state(tts, "ready")
            assert st["stages"][stage]["restarts"] == 1 and st["stages"][stage]["pid"] != pid
            assert st["stages"][stage]["state"] == "up" and f"pid {pid}" in st["stages"][stage]["last_death"]
            again = tts.synthesize("Same again.", seed=5, **FAST)  # the first request after the restart
            assert np.array_equal(again, reference)
        assert tts.status()["restarts"] == len(STAGES)
        after = resources()
        assert after["processes"] == baseline["processes"]  # the three stages (and multiprocessing's resource tracker)
        for key in ("fds", "threads"):
            assert abs(after[key] - baseline[key]) <= 0.1 * baseline[key], (key, baseline, after)

        # the budget is spent: one more death and the pipeline gives up for good
        pid = tts.supervisor.pids()["cfm"]
        os.kill(pid, signal.SIGKILL)
        assert tts.failed.wait(30), "the supervisor did not give up"
        st = tts.status()
        assert st["state"] == "unhealthy" and st["stages"]["cfm"]["state"] == "failed"
        assert st["reason"].startswith(f"stage cfm (pid {pid}) died") and st["reason"].endswith("giving up")
        with pytest.raises(RequestError, match="giving up"):
            tts.synthesize("Too late.", **FAST)


def test_a_forced_close_fails_what_is_in_flight_and_leaves_no_reader_blocked(tts_owned):
    tts = tts_owned
    handle = tts.submit("A long one.", seed=1, ignore_eos=True, max_new_tokens=1400, **FAST)
    chunks = handle.chunks()
    next(chunks)
    errors = []

    def read():
        try:
            for _ in chunks:
                pass
        except RequestError as e:
            errors.append(str(e))

    reader = threading.Thread(target=read)
    reader.start()
    stages = list(tts.supervisor.pids().values())
    # a drain far longer than the work, cut short as a second SIGTERM to `serve` does: force_close from another thread
    closer = threading.Thread(target=tts.close, kwargs={"drain": 3600})
    closer.start()
    tts.force_close()
    closer.join(60)
    assert not closer.is_alive()
    reader.join(10)
    assert not reader.is_alive() and len(errors) == 1 and errors[0].startswith("pipeline: shutting down")
    assert not set(stages) & set(children_of(os.getpid()))  # every stage process ended (and was reaped)


@pytest.fixture
def tts_owned():
    p = Pipeline(PipelineConfig(model=ModelSpec(), threads=1))
    p.start()
    try:
        yield p
    finally:
        p.close()


def test_sigterm_to_the_cli_leaves_no_process_and_no_endpoint_file():
    import shutil
    import tempfile

    run_base = tempfile.mkdtemp(prefix="t-", dir="/tmp")  # our run dir goes here, apart from other runs on the machine
    p = subprocess.Popen([*CLI, "say", "--ignore-eos", "--max-new-tokens", "1400", "--n-timesteps", "2", "--quiet",
                          "Keep talking."], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env={**os.environ, "TMPDIR": run_base})
    try:
        assert p.stdout.read(1920), "no audio before SIGTERM"  # audio is flowing: the stages are up
        kids = children_of(p.pid)
        assert len(kids) >= 3
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) != 0
    finally:
        if p.poll() is None:
            p.kill()
    for kid in kids:  # wait on each stage process's exit (a pidfd becomes readable when it ends), no polling
        try:
            fd = os.pidfd_open(kid)
        except ProcessLookupError:
            continue  # already gone
        try:
            assert select.select([fd], [], [], 5.0)[0], f"stage process {kid} outlived the CLI"
        finally:
            os.close(fd)
    left = glob.glob(f"{run_base}/tts-*")
    shutil.rmtree(run_base, ignore_errors=True)
    assert left == [], "endpoint directory left behind"
