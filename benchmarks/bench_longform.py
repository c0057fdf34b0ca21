"""Benchmark long-form delivery: a 2,000-character text, segmented and pipelined in the coordinator vs segments run one after another.

    .venv/bin/python benchmarks/bench_longform.py [--preset tiny] [--chars 2000] [--repeats 2] [--front-window 0] [--out PATH]

One multi-process pipeline serves every mode, alternated (A B A B ...), so they see the same
machine state:

- "pipelined (coordinator)": ONE request, `tts.stream(text, longform=True)`: the coordinator
  plans it and runs segment k+1 in T3 once segment k streams (at most 2 in the stages,
  continuations without the first-chunk priority lane; `pipeline/longform_coord.py`);
- "one after another": the same segments as separate requests through
  `pipeline.longform.Runner` with a window of 1 (the next one is submitted when the previous
  one has ended), stitched with the same pauses;
- with `--front-window N`, also "front-end window N": the Runner with N requests in flight
  (the previous front-end pipelining: every segment its own request, each first chunk in
  the priority lane).

Random weights never stop on their own, so every segment runs with ignore_eos and one
length: the mean segment's characters x 1.7 speech tokens per character
(`SPEECH_TOKENS_PER_CHAR`), the same in every mode (a long-form request's parameters apply
to all its segments). Times are taken where the stream is consumed:

- time to first audio: start -> first audio chunk;
- longest gap: the longest stall of a real-time player that starts at the first chunk
  (`benchmarks/harness/metrics.playback`; pauses count as audio, they are delivered as soon
  as the previous segment ends), and when it began (seconds after the first audio, in the
  JSON: `max_gap_at_s`); total stall; wall time; RTF = wall time / audio duration.
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


def measure(items) -> dict:
    """Figures of one stitched stream: `items` yields pcm sample counts as chunks arrive."""
    t0 = time.perf_counter()
    arrivals, samples = [], []
    for n in items:
        arrivals.append(time.perf_counter() - t0)
        samples.append(n)
    wall = time.perf_counter() - t0
    durs = [n / SAMPLE_RATE for n in samples]
    first = next(t for t, n in zip(arrivals, samples) if n)
    stalls = playback(arrivals, durs)
    audio_s = sum(durs)
    worst = max(stalls, key=lambda st: st[1], default=(first, 0.0))
    return {"ttfa_s": first, "max_gap_s": worst[1], "max_gap_at_s": worst[0] - first,
            "total_stall_s": sum(s for _, s in stalls), "stalls": len(stalls), "wall_s": wall,
            "audio_s": audio_s, "rtf": wall / audio_s, "samples": sum(samples)}


def run_coordinator(tts, text: str, params: dict) -> dict:
    def items():
        for chunk in tts.stream(text, longform=True, **params):
            yield len(chunk.pcm)
    return measure(items())


def run_runner(backend, plan, window: int, params: dict) -> dict:
    from pipeline.longform import Audio, Runner, Silence, plan_units

    runner = Runner(backend, window)
    for u in plan_units(plan):
        runner.add(dataclasses.replace(u, params={**u.params, **params}))
    runner.close_input()

    def items():
        for item in runner.results():
            if isinstance(item, (Audio, Silence)):
                yield len(item.pcm) if isinstance(item, Audio) else item.samples
    return measure(items())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--front-window", type=int, default=0, help="also run the front-end Runner with this window (0: no)")
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
    plan = plan_text(spec, text, {"seed": 1})
    mean_chars = statistics.mean(len(seg.text) for seg in plan.segments)
    tokens = max(1, round(SPEECH_TOKENS_PER_CHAR * mean_chars))
    params = {"seed": 1, "ignore_eos": True, "max_new_tokens": tokens, "n_timesteps": args.n_timesteps}
    plan = plan_text(spec, text, params)
    modes = {"pipelined (coordinator)": lambda: run_coordinator(tts, text, params),
             "one after another": lambda: run_runner(backend, plan, 1, {})}
    if args.front_window:
        modes[f"front-end window {args.front_window}"] = lambda: run_runner(backend, plan, args.front_window, {})
    results: dict[str, list[dict]] = {m: [] for m in modes}
    with Pipeline(PipelineConfig(model=spec, threads=args.threads, max_inflight=max(args.front_window, 4))) as tts:
        backend = PipelineBackend(tts)
        run_runner(backend, plan_text(spec, SENTENCES[0], params), 1, {})  # warm-up
        for r in range(args.repeats):
            for mode, run in modes.items():
                res = run()
                assert res["samples"] == plan.exact_samples, (mode, res["samples"], plan.exact_samples)
                results[mode].append(res)
                print(f"[{r + 1}/{args.repeats}] {mode}: {json.dumps({k: round(v, 3) for k, v in res.items()})}", file=sys.stderr)
    load_after = Path("/proc/loadavg").read_text().strip()

    def med(mode, key):
        return statistics.median(x[key] for x in results[mode])

    cmd = "benchmarks/bench_longform.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"# Long-form delivery: {len(text)} characters, {len(plan.segments)} segments, preset `{args.preset}`", "",
             f"Command: `.venv/bin/python {cmd.strip()}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch threads per stage "
             f"{args.threads or 'cores/3'}, n_timesteps {args.n_timesteps}  ",
             f"/proc/loadavg before: `{load_before}`, after: `{load_after}`  ",
             f"Median of {args.repeats} alternated runs per mode; every segment ignore_eos with {tokens} speech "
             f"tokens ({mean_chars:.0f} characters per segment on average x {SPEECH_TOKENS_PER_CHAR}); pauses 0.2 s; "
             f"every stream checked to hold exactly {plan.exact_samples} samples.", "",
             "| mode | time to first audio | longest gap | total stall | stalls | wall | audio | RTF |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        lines.append(f"| {mode} | {med(mode, 'ttfa_s'):.2f} s | {med(mode, 'max_gap_s'):.2f} s | "
                     f"{med(mode, 'total_stall_s'):.2f} s | {med(mode, 'stalls'):.0f} | {med(mode, 'wall_s'):.1f} s | "
                     f"{med(mode, 'audio_s'):.1f} s | {med(mode, 'rtf'):.2f} |")
    a, b = "pipelined (coordinator)", "one after another"
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
