"""benchmarks/bench_voice.py on the tiny preset for a short clip: every row is timed and positive."""
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_voice  # noqa: E402


def test_bench_preset_times_every_step(tmp_path):
    wav = tmp_path / "ref.wav"
    sf.write(str(wav), bench_voice.synthetic_recording(2.0, 16000), 16000, subtype="PCM_16")
    r = bench_voice.bench_preset("tiny", wav, "cpu", 1, tmp_path)
    assert r["preset"] == "tiny" and r["build_s"] > 0 and r["cold_s"] > 0
    assert len(r["rows"]) == 11 and all(med >= mn > 0 for med, mn in r["rows"].values())
    assert r["params"]["ve"] == 34818  # the golden tiny VoiceEncoder's parameter count
