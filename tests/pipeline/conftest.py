"""A multi-process pipeline on the built-in tiny model, started once for the module that asks for it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.api import Pipeline
from pipeline.launcher import PipelineConfig
from pipeline.models import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, str(ROOT / "bin" / "tts-pipeline")]
FAST = {"n_timesteps": 2}  # sample counts and plumbing do not depend on the solver's step count


@pytest.fixture(scope="module")
def tts():
    with Pipeline(PipelineConfig(model=ModelSpec(), threads=1)) as p:
        yield p


def run_cli(*args, input=None, timeout=120):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*CLI, *args], input=input, capture_output=True, timeout=timeout, env=env)


def children_of(pid: int) -> list[int]:
    """Live descendants of `pid` (from /proc)."""
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
            if ppid == pid and state != "Z":
                kids.append(int(d.name))
    return kids + [g for k in kids for g in children_of(k)]
