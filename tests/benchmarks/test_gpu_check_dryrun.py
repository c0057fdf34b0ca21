"""benchmarks/gpu_check.sh rehearsed on a CPU (--cpu-dry-run, tiny sizes): every step runs and every section
writes its figures to JSON + markdown, the gpu tests are collected and skip saying CUDA is needed, and the
set-up refuses clearly when packages are missing and no wheels are carried, or no output folder is given."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run(*args, env=None, timeout=420):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_cpu_dry_run_writes_every_section(tmp_path):
    r = run("--cpu-dry-run", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu-check.json").read_text())
    assert res["dry_run"] and res["preset"] == "tiny"
    s = res["sections"]
    assert set(s) == {"t3", "flow", "hift", "ipc", "pipeline", "fidelity"}
    assert not [k for k, v in s.items() if "error" in v], {k: v.get("error") for k, v in s.items()}
    assert set(s["t3"]["ms_per_tick"]) == {"eager", "graphs"} and all(v > 0 for v in s["t3"]["ms_per_tick"]["graphs"].values())
    assert s["flow"]["captured_shapes"] > 0 and s["flow"]["ms_per_chunk"]["graphs"]["first"] > 0
    assert s["ipc"]["skipped"] == "needs CUDA"
    cells = s["pipeline"]["modes"]["eager"]["cells"]
    assert [c["concurrency"] for c in cells] == [1, 2] and all(c["ttfb_p50_ms"] > 0 for c in cells)
    assert len(s["pipeline"]["knobs"]) == 2 and len(s["fidelity"]["rows"]) == 3
    md = (tmp_path / "gpu-check.md").read_text()
    assert "## T3 ms per tick" in md and "## Pipeline" in md and "CPU dry run" in md
    tests = (tmp_path / "gpu-tests.log").read_text()
    assert "needs CUDA" in tests and " passed" not in tests and "failed" not in tests  # all collected, all skipped


def test_setup_names_missing_packages_without_wheels(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    empty = tmp_path / "wheels"
    empty.mkdir()
    r = run("--cpu-dry-run", "--out", str(tmp_path / "out"), "--wheels", str(empty),
            env={"PYTHON": str(bare / "bin" / "python")}, timeout=60)
    assert r.returncode == 1 and "missing Python packages: torch numpy zmq" in r.stderr
    assert "gpu_wheels.sh" in r.stderr


def test_bad_arguments_are_refused(tmp_path):
    r = run("--cpu-dry-run", env={"OUT": ""}, timeout=30)
    assert r.returncode == 2 and "no output folder" in r.stderr
    r = run("--fast", "--out", str(tmp_path), timeout=30)
    assert r.returncode == 2 and "unknown argument --fast" in r.stderr
