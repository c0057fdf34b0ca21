"""Benchmark long-form delivery: a 2,000-character text, segments pipelined vs run one after another, side by side.

    .venv/bin/python benchmarks/bench_longform.py [--preset tiny] [--chars 2000] [--window 4] [--repeats 2] [--out PATH]

One multi-process pipeline serves both modes, alternated (A B A B ...), so they see the same
machine state. "pipelined" is `pipeline.longform.Runner` with `--window` requests in flight
(the next segment is submitted once the newest one streams); "one after another" is the
same runner with a window of 1 (the next segment is submitted when the previous one has
ended). Random weights never stop on their own, so each segment runs with ignore_eos and
a realistic length: 1.7 speech tokens per character (`SPEECH_TOKENS_PER_CHAR`). Every time
is taken where the stitched stream is consumed. Metrics:

- time to first audio: start -> first audio chunk of the stream;
- longest gap: the longest stall of a real-time player that starts at the first chunk
  (`benchmarks/harness/metrics.playback`; pauses count as audio, they are delivered as soon
  as the previous segment ends); total stall; wall time; RTF = wall time / audio duration.
Writes markdown (stdout and --out) and JSON beside it, with /proc/loadavg before and after.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness.metrics import SAMPLE_RATE, playback  # noqa: E402
from pipeline.text.budget import SPEECH_TOKENS_PER_CHAR  # noqa: E402

SENTENCES = [  # varied lengths, so segments differ as in real prose
    "The station was almost empty when the last train pulled in.",
    "Nobody got off.",
    "A porter, half asleep on a bench, looked up at the sound of the brakes, then closed his eyes again.",
    "Rain had been falling since noon; the gutters ran like small rivers.",
    "Somewhere a radio played an old song about the sea.",
    "She checked the timetable twice.",
    "It said what it had said an hour ago: no further departures tonight, and the first train at six.",
]


def make_text(chars: int) -> str:
    out, i = [], 0
    while len(" ".join(out)) < chars:
        out.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    return " ".join(out)[:chars].rsplit(" ", 1)[0] + "."


def run_once(backend, plan, window: int, params: dict) -> dict:
    from pipeline.longform import Audio, Finished, Runner, Silence, plan_units

    runner = Runner(backend, window)
    for u in plan_units(plan):
        tokens = max(1, round(SPEECH_TOKENS_PER_CHAR * len(u.text)))
        runner.add(dataclasses.replace(u, params={**u.params, **params, "max_new_tokens": tokens}))
    runner.close_input()
    t0 = time.perf_counter()
    arrivals, samples, segs = [], [], 0
    for item in runner.results():
        if isinstance(item, Finished):
            segs += 1
            continue
        arrivals.append(time.perf_counter() - t0)
        samples.append(len(item.pcm) if isinstance(item, Audio) else item.samples)
    wall = time.perf_counter() - t0
    durs = [n / SAMPLE_RATE for n in samples]
    first = next(t for t, it in zip(arrivals, samples) if it)
    stalls = playback(arrivals, durs)
    audio_s = sum(durs)
    return {"ttfa_s": first, "max_gap_s": max((s for _, s in stalls), default=0.0),
            "total_stall_s": sum(s for _, s in stalls), "stalls": len(stalls), "wall_s": wall,
            "audio_s": audio_s, "rtf": wall / audio_s, "segments": segs}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n-timesteps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per stage (0 = cores / 3)")
    ap.add_argument("--out", help="markdown path (JSON beside it)")
    args = ap.parse_args(argv)

    from pipeline.api import Pipeline
    from pipeline.launcher import PipelineConfig
    from pipeline.longform import PipelineBackend, plan_text
    from pipeline.models import ModelSpec

    load_before = Path("/proc/loadavg").read_text().strip()
    spec = ModelSpec(preset=args.preset)
    text = make_text(args.chars)
    params = {"seed": 1, "ignore_eos": True, "n_timesteps": args.n_timesteps}
    plan = plan_text(spec, text, {"seed": 1})
    modes = {"pipelined": args.window, "one after another": 1}
    results: dict[str, list[dict]] = {m: [] for m in modes}
    with Pipeline(PipelineConfig(model=spec, threads=args.threads, max_inflight=max(args.window, 1))) as tts:
        backend = PipelineBackend(tts)
        run_once(backend, plan_text(spec, SENTENCES[0], {"seed": 0}), 1, params)  # warm-up
        for r in range(args.repeats):
            for mode, window in modes.items():
                res = run_once(backend, plan, window, params)
                results[mode].append(res)
                print(f"[{r + 1}/{args.repeats}] {mode}: {json.dumps({k: round(v, 3) for k, v in res.items()})}", file=sys.stderr)
    load_after = Path("/proc/loadavg").read_text().strip()

    def med(mode, key):
        return statistics.median(x[key] for x in results[mode])

    cmd = "benchmarks/bench_longform.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"# Long-form delivery: {len(text)} characters, {len(plan.segments)} segments, preset `{args.preset}`", "",
             f"Command: `.venv/bin/python {cmd.strip()}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch threads per stage "
             f"{args.threads or 'cores/3'}, n_timesteps {args.n_timesteps}, window {args.window}  ",
             f"/proc/loadavg before: `{load_before}`, after: `{load_after}`  ",
             f"Median of {args.repeats} alternated runs per mode; every segment ignore_eos with "
             f"{SPEECH_TOKENS_PER_CHAR} speech tokens per character; pauses 0.2 s.", "",
             "| mode | time to first audio | longest gap | total stall | stalls | wall | audio | RTF |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        lines.append(f"| {mode} | {med(mode, 'ttfa_s'):.2f} s | {med(mode, 'max_gap_s'):.2f} s | "
                     f"{med(mode, 'total_stall_s'):.2f} s | {med(mode, 'stalls'):.0f} | {med(mode, 'wall_s'):.1f} s | "
                     f"{med(mode, 'audio_s'):.1f} s | {med(mode, 'rtf'):.2f} |")
    a, b = "pipelined", "one after another"
    lines += ["", f"Ratios (one after another / pipelined): time to first audio "
              f"{med(b, 'ttfa_s') / med(a, 'ttfa_s'):.2f}x, total stall "
              f"{med(b, 'total_stall_s') / max(med(a, 'total_stall_s'), 1e-9):.1f}x, wall {med(b, 'wall_s') / med(a, 'wall_s'):.2f}x."]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        Path(args.out).write_text(md)
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"command": cmd, "loadavg_before": load_before, "loadavg_after": load_after, "chars": len(text),
             "segments": len(plan.segments), "args": vars(args), "runs": results}, indent=2))


if __name__ == "__main__":
    main()
