"""The harness end to end for a few seconds on the tiny model: every field of the JSON is there."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness.main import main
from benchmarks.harness.metrics import DEFINITIONS, SUMMARY_KEYS

ROOT = Path(__file__).resolve().parents[2]
PERCENTILE_KEYS = {"n", "mean", "p50", "p90", "p95", "p99", "min", "max"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # two first-chunk sizes (so the TTFB ratio and plot exist), one short text, two solver steps: seconds
    main(["--preset", "tiny", "--sweeps", "first-chunk", "--first-chunk", "4,8", "--texts", "0", "--tokens", "16",
          "--reps", "1", "--warmup", "0", "--param", "n_timesteps=2", "--out-dir", str(out), "--name", "smoke"])
    return out


def test_json_has_every_field(run):
    doc = json.loads((run / "smoke.json").read_text())
    meta = doc["meta"]
    for key in ("date", "device", "torch", "python", "cpu_count", "commit", "preset", "schedule", "workload",
                "threads", "definitions", "sweeps", "args", "wall_s"):
        assert key in meta, key
    assert meta["preset"] == "tiny" and meta["device"] == "cpu" and set(meta["definitions"]) == set(DEFINITIONS)
    assert len(doc["cells"]) == 2
    for cell in doc["cells"]:
        assert set(cell["modes"]) == {"pipelined", "sequential"}
        assert {"ttfb_s.p50", "rtf.mean", "steady_chunks_per_s.p50", "throughput_x"} <= set(cell["ratios"])
        for name, mode in cell["modes"].items():
            s = mode["summary"]
            for key in SUMMARY_KEYS:
                assert set(s[key]) == PERCENTILE_KEYS, (name, key)
            assert s["throughput_x"] > 0
            (req,) = mode["requests"]
            assert req["tokens"] == 16 and sum(req["samples"]) == 16 * 960
            assert len(req["arrivals_s"]) == len(req["samples"]) == req["metrics"]["chunks"]
            assert req["arrivals_s"] == sorted(req["arrivals_s"])
        stats = cell["modes"]["pipelined"]["requests"][0]["stats"]
        assert {f"{k}_s.{st}" for k in ("busy", "wire") for st in ("t3", "cfm", "hifigan")} <= set(stats)
    assert {"ttfb_4_over_25.pipelined", "wire_frac", "steady_chunk_rate_ratio"} - set(doc["targets"]) == \
        {"ttfb_4_over_25.pipelined"}  # no 25-token cell in this run


def test_markdown_and_pictures(run):
    md = (run / "smoke.md").read_text()
    assert "| 4 | pipelined |" in md and "| 8 | **ratio** |" in md and "RTF = generation time / audio duration" in md
    pytest.importorskip("matplotlib", reason="the pictures need the `bench` extra (make setup installs it)")
    for name in ("smoke-timeline-pipelined.png", "smoke-timeline-sequential.png", "smoke-ttfb.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_cli_bench_forwards_help():
    r = subprocess.run([sys.executable, str(ROOT / "bin" / "tts-pipeline"), "bench", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--first-chunk" in r.stdout and "--sequential" not in r.stdout
