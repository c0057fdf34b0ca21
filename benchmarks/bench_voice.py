"""Voice-cloning benchmark (a script, not a test): the time to make a voice from a recording, per preset,
and the time to first audio of a request with a new voice file vs a stored voice.

Usage:  .venv/bin/python benchmarks/bench_voice.py [--presets tiny small chatterbox] [--seconds 10]
                                                   [--sample-rate 44100] [--reps 3] [--threads N] [--out FILE.md]
        .venv/bin/python benchmarks/bench_voice.py --first-audio [--presets tiny small] [--reps 3] [--out FILE.md]

--first-audio starts the multi-process pipeline per preset (1 torch thread per stage) and
times submit -> first audio chunk of: the default voice; a stored voice on its first use in
the stage processes (each stage loads its part) and on a later request (LRU hit); a new
voice file (the front end computes the voice first: the process's first one also loads the
conditioning models, timed on its own row) and the same file again (found in the cache).
Each rep uses fresh voices and files (recordings shifted by the rep number).

Built-in random weights (timing does not depend on the values). A synthetic voiced recording
(harmonics of a wandering f0, syllable-rate envelope, a little noise) of --seconds at
--sample-rate is written to a WAV file; for each preset the script times, after WARMUP
untimed calls, the parts of `compute_conditionals` in their order and the whole of it, plus
reading the file, storing the voice and loading each stage's part back. Median / min of
--reps runs. Records /proc/loadavg before and after (the machine may be shared).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.voices import VoiceLibrary  # noqa: E402
from stages.hifigan.mel import mel_spectrogram  # noqa: E402
from stages.voice.audio import read_reference  # noqa: E402
from stages.voice.checkpoint import load_voice_models  # noqa: E402
from stages.voice.conditioning import compute_conditionals  # noqa: E402
from stages.voice.fbank import campplus_features  # noqa: E402
from stages.voice.resample import SincResampler, soxr_hq  # noqa: E402

WARMUP = 1  # untimed calls first: oneDNN primitive creation for every conv shape (seconds on a cold process)
PROMPT_LEN = 150  # T3 prompt tokens (every preset)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def synthetic_recording(seconds: float, sr: int) -> np.ndarray:
    """Speech-like test audio: 8 harmonics of an f0 wandering 100-180 Hz, 4 Hz syllable envelope, noise."""
    g = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 9))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    return (0.2 * voiced * env + 0.003 * g.standard_normal(t.size)).astype(np.float32)


def timed(fn, reps: int) -> tuple[float, float]:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def bench_preset(name: str, wav_path: Path, device: str, reps: int, tmp: Path) -> dict:
    t0 = time.perf_counter()
    models = load_voice_models(None, name, device)
    build_s = time.perf_counter() - t0
    audio = read_reference(wav_path, models.cfg)
    cfg = models.cfg
    t0 = time.perf_counter()
    compute_conditionals(models, audio, 0.5, PROMPT_LEN)  # the process's first voice: every conv shape is new
    cold_s = time.perf_counter() - t0
    wav24 = soxr_hq(audio.samples, audio.sample_rate, cfg.s3gen_sr)
    ref16 = soxr_hq(wav24, cfg.s3gen_sr, cfg.s3_sr)
    ref24 = torch.from_numpy(wav24[: cfg.dec_cond_len])[None]
    wav16 = SincResampler(cfg.s3gen_sr, cfg.s3_sr)(ref24)[0].to(device)
    t3_in = torch.from_numpy(ref16[: cfg.enc_cond_len]).to(device)
    parts = {
        "read + check the file": lambda: read_reference(wav_path, cfg),
        "resample (soxr x2 + sinc)": lambda: SincResampler(cfg.s3gen_sr, cfg.s3_sr)(
            torch.from_numpy(soxr_hq(soxr_hq(audio.samples, audio.sample_rate, cfg.s3gen_sr), cfg.s3gen_sr,
                                     cfg.s3_sr)[None])),
        "prompt mel (24 kHz, 10 s)": lambda: mel_spectrogram(ref24),
        "CAMPPlus x-vector (fbank + net, 10 s)": lambda: models.campplus(campplus_features(wav16)),
        "S3Tokenizer, flow prompt (10 s)": lambda: models.tokenizer(wav16),
        "S3Tokenizer, T3 prompt (6 s)": lambda: models.tokenizer(t3_in, max_tokens=PROMPT_LEN),
        "VoiceEncoder (whole clip)": lambda: models.voice_encoder.embed(ref16),
    }
    rows = {k: timed(fn, reps) for k, fn in parts.items()}
    rows["**compute_conditionals (the whole voice)**"] = timed(lambda: compute_conditionals(models, audio, 0.5,
                                                                                              PROMPT_LEN), reps)
    conds = compute_conditionals(models, audio, 0.5, PROMPT_LEN)
    lib = VoiceLibrary(tmp / f"voices-{name}")
    counter = iter(range(10_000))
    rows["store the voice (write)"] = timed(lambda: lib.add(f"v{next(counter)}", conds, {}), reps)
    rows["T3 part read (+ hash check)"] = timed(lambda: lib.store.load_t3("v0"), reps)
    rows["CFM part read (+ hash check)"] = timed(lambda: lib.store.load_cfm("v0"), reps)
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in
              (("ve", models.voice_encoder), ("tokenizer", models.tokenizer), ("campplus", models.campplus))}
    return dict(preset=name, build_s=build_s, cold_s=cold_s, rows=rows, params=params)


FIRST_AUDIO_TEXT = "Hello there, this is a short test."
FIRST_AUDIO_PARAMS = {"seed": 1, "ignore_eos": True, "max_new_tokens": 24}  # a fixed amount of work per request


def first_audio_s(tts, **kw) -> float:
    """Seconds from submit to the first audio chunk (the voice file, if any, is made inside this span); drains the rest."""
    t0 = time.perf_counter()
    first = None
    for _ in tts.stream(FIRST_AUDIO_TEXT, **FIRST_AUDIO_PARAMS, **kw):
        if first is None:
            first = time.perf_counter() - t0
    return first


def bench_first_audio(name: str, seconds: float, sr: int, reps: int, tmp: Path) -> dict:
    from pipeline.api import Pipeline
    from pipeline.launcher import PipelineConfig
    from pipeline.models import ModelSpec
    from pipeline.voices import add_voice_from_file

    spec = ModelSpec(preset=name)
    vdir = tmp / f"fa-voices-{name}"
    lib = VoiceLibrary(vdir)
    base = synthetic_recording(seconds + reps, sr)

    def recording(tag: str, rep: int) -> Path:
        path = tmp / f"fa-{name}-{tag}-{rep}.wav"
        shift = int((rep + (0.5 if tag == "file" else 0)) * sr)  # a different clip per rep and kind
        sf.write(str(path), base[shift: shift + int(seconds * sr)], sr, subtype="PCM_16")
        return path

    for rep in range(reps):  # stored voices are made beforehand (`voice add`), not timed here
        add_voice_from_file(lib, f"stored{rep}", recording("stored", rep), spec)
    rows: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    with Pipeline(PipelineConfig(model=spec, threads=1, voices_dir=str(vdir))) as tts:
        start_s = time.perf_counter() - t0
        first_audio_s(tts)  # warm the path once
        t0 = time.perf_counter()
        tts.voice_for_file(str(recording("warm", 0)))  # the front end's first voice: loads the conditioning models
        rows["new voice file, the process's first (models load + compute)"] = [time.perf_counter() - t0]
        for rep in range(reps):
            rows.setdefault("default voice", []).append(first_audio_s(tts))
            rows.setdefault("stored voice, first use (each stage loads its part)", []).append(
                first_audio_s(tts, voice=f"stored{rep}"))
            rows.setdefault("stored voice, later request (LRU hit)", []).append(first_audio_s(tts, voice=f"stored{rep}"))
            f = recording("file", rep)
            rows.setdefault("**new voice file (computed in the front end, then stored)**", []).append(
                first_audio_s(tts, voice_file=str(f)))
            rows.setdefault("same voice file again (found in the cache)", []).append(first_audio_s(tts, voice_file=str(f)))
    return dict(preset=name, start_s=start_s, rows={k: (statistics.median(v), min(v)) for k, v in rows.items()})


def first_audio_report(args, results: list[dict], load_before: str, load_after: str) -> str:
    lines = [
        "# Time to first audio with a new voice file vs a stored voice (cpu)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_voice.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"Machine: {platform.machine()}, shared with other jobs (figures are side by side in one run: read the "
        f"ratios), torch {torch.__version__}; /proc/loadavg before {load_before}, after {load_after}",
        f"Multi-process pipeline, built-in random weights, 1 torch thread per stage; request: "
        f"{FIRST_AUDIO_PARAMS['max_new_tokens']} tokens (ignore_eos), default schedule; recordings {args.seconds:g} s "
        f"synthetic voiced audio at {args.sample_rate} Hz. Submit -> first audio chunk, median / min of {args.reps} "
        "(one fresh voice or file per rep), milliseconds.",
        "",
        "| request | " + " | ".join(r["preset"] for r in results) + " |",
        "|---|" + "---|" * len(results),
        "| pipeline start (three stage processes, warm-up) | " + " | ".join(f"{r['start_s'] * 1e3:.0f}" for r in results)
        + " |",
    ]
    for step in results[0]["rows"]:
        lines.append(f"| {step} | " + " | ".join(
            f"{r['rows'][step][0] * 1e3:.0f} / {r['rows'][step][1] * 1e3:.0f}" for r in results) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "chatterbox"])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the recording")
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--first-audio", action="store_true",
                    help="time to first audio of requests with a new voice file vs a stored voice (starts the pipeline)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = loadavg()
    if args.first_audio:
        with tempfile.TemporaryDirectory() as d:
            results = [bench_first_audio(p, args.seconds, args.sample_rate, args.reps, Path(d)) for p in args.presets]
        text = first_audio_report(args, results, load_before, loadavg())
        print(text)
        if args.out:
            args.out.write_text(text)
        return
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "ref.wav"
        sf.write(str(wav), synthetic_recording(args.seconds, args.sample_rate), args.sample_rate, subtype="PCM_16")
        results = [bench_preset(p, wav, args.device, args.reps, Path(d)) for p in args.presets]
    load_after = loadavg()
    lines = [
        f"# Voice-cloning benchmark ({args.device})",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_voice.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"python {platform.python_version()}; /proc/loadavg before {load_before}, after {load_after}",
        f"Recording: {args.seconds:g} s synthetic voiced audio, {args.sample_rate} Hz 16-bit mono WAV. Built-in random "
        f"weights, fp32, median / min of {args.reps} runs after {WARMUP} warm-up call(s), milliseconds.",
        "",
        "| step | " + " | ".join(r["preset"] for r in results) + " |",
        "|---|" + "---|" * len(results),
        "| parameters (VE / tokenizer / CAMPPlus) | " + " | ".join(
            f"{r['params']['ve'] / 1e6:.2f} M / {r['params']['tokenizer'] / 1e6:.1f} M / {r['params']['campplus'] / 1e6:.2f} M"
            for r in results) + " |",
        "| build the models (random weights, once per process) | " + " | ".join(f"{r['build_s'] * 1e3:.0f}" for r in results) + " |",
        "| first voice of a fresh process (compute_conditionals, cold) | " + " | ".join(
            f"{r['cold_s'] * 1e3:.0f}" for r in results) + " |",
    ]
    for step in results[0]["rows"]:
        lines.append(f"| {step} | " + " | ".join(f"{r['rows'][step][0] * 1e3:.1f} / {r['rows'][step][1] * 1e3:.1f}" for r in results)
                     + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
