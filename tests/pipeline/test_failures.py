"""Failure and shutdown: a dead stage fails every in-flight request fast; SIGTERM leaves nothing behind."""
import glob
import os
import select
import signal
import subprocess
import time

import pytest

from pipeline.api import Pipeline
from pipeline.coordinator import RequestError
from pipeline.launcher import PipelineConfig
from pipeline.models import ModelSpec

from .conftest import CLI, FAST, children_of

DEATH_DEADLINE_S = 2.0  # every in-flight request must fail within this long of a stage dying


@pytest.mark.parametrize("stage", ["t3", "cfm", "hifigan"])
def test_killed_stage_fails_in_flight_requests_fast(stage):
    with Pipeline(PipelineConfig(model=ModelSpec(), threads=1)) as tts:
        it = tts.stream("A long one.", seed=1, ignore_eos=True, max_new_tokens=1400, **FAST)
        next(it)  # mid-request: audio is flowing
        os.kill(tts.supervisor.pids()[stage], signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(RequestError, match=f"stage {stage}"):
            for _ in it:
                pass
        assert time.monotonic() - t0 < DEATH_DEADLINE_S
        with pytest.raises(RequestError, match=f"stage {stage}"):  # later requests fail at once too
            tts.synthesize("Another.", **FAST)


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
