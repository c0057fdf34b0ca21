"""Chatterbox Turbo against the base model, side by side in one run: T3 ms per token, flow ms per chunk,
time to first audio and RTF, at matching presets (default: `small` and `turbo-small`).

    .venv/bin/python benchmarks/bench_turbo.py [--presets small turbo-small turbo-small:prompt_tokens=50] [--tokens 75]
                                               [--threads 1] [--repeats 3]

Everything runs in this process with the stages' own classes and each model's default schedule
(base: 10 cosine Euler steps with the CFG pair and a 50-token prompt window; Turbo: 2 meanflow
steps, no CFG). Built-in random weights, `ignore_eos` (exactly --tokens tokens per request);
speed does not depend on the weight values. Rows of one run are measured alternately
(repeat r of every preset before repeat r + 1), so a load change on a shared machine hits
both models alike; figures are medians. Prints markdown on stdout.

- T3 ms/token: one request's tokens through the batched tick (B = 1, prefill excluded; the
  batching figures are bench_t3.py's).
- flow ms/chunk: one steady-state chunk (a 16-token hop with 32 tokens of left context and the
  prompt window, as the default schedule's later chunks) through the CFM stage's flow batch.
- first audio / RTF: the single-process streaming path (`pipeline.sequential.Engine.stream`):
  T3, CFM and HiFiGAN interleaved in one thread, so the figure is their sum (the multi-process
  pipeline overlaps them).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pipeline.sequential import Engine  # noqa: E402
from stages.cfm.batch import run_flow_jobs  # noqa: E402
from stages.cfm.part import new_cfm_stream  # noqa: E402
from stages.common.params import parse_params  # noqa: E402
from stages.common.spec import ModelSpec  # noqa: E402
from stages.t3.batch import Admission  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods."
SEED = 5


def t3_ms_per_token(engine: Engine, tokens: int, batch_size: int) -> float:
    """Median tick time / batch size with `batch_size` requests active (prefill excluded)."""
    batch, req = engine.t3.batch, parse_params({"seed": SEED, "ignore_eos": True, "max_new_tokens": tokens},
                                               model=engine.model)
    key, conds = engine.voices.resolve(None)
    ids, max_new = batch.check(engine.text_ids(TEXT), conds, req.sampling)
    batch.admit([Admission(f"b{i}", ids, conds, key, req.sampling, max_new) for i in range(batch_size)])
    times = []
    while batch.active:
        t = time.perf_counter()
        batch.tick()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times) / batch_size


def flow_ms_per_chunk(engine: Engine) -> float:
    """One steady-state chunk's flow call (encoder + every solver step)."""
    req = parse_params({"seed": SEED, "first_chunk_tokens": 16, "growth": 1.0, "max_hop_tokens": 16}, engine.schedule,
                       model=engine.model)
    cfm = new_cfm_stream(engine.cfm, req)
    cfm.add(list(range(100, 100 + 16 * 4 + 3)))
    jobs = list(iter(cfm.plan, None))  # 4 hops of 16; the 3rd and 4th carry 32 tokens of left context
    t = time.perf_counter()
    run_flow_jobs(engine.cfm.flow, [jobs[-1]])
    return 1e3 * (time.perf_counter() - t)


def stream_figures(engine: Engine, tokens: int) -> tuple[float, float, int]:
    """(time to first audio s, RTF, samples) of one streamed request."""
    t0 = time.perf_counter()
    first, samples = None, 0
    for chunk in engine.stream(TEXT, {"seed": SEED, "ignore_eos": True, "max_new_tokens": tokens}):
        first = first if first is not None else time.perf_counter() - t0
        samples += chunk.pcm.numel()
    return first, (time.perf_counter() - t0) / (samples / 24000), samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["small", "turbo-small"])
    ap.add_argument("--tokens", type=int, default=75, help="speech tokens per request (25 = 1 s)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = open("/proc/loadavg").read().strip() if os.path.exists("/proc/loadavg") else "n/a"
    engines = {}
    for p in args.presets:  # "preset" or "preset:knob=value,...": that model with a schedule knob changed
        name, _, knobs = p.partition(":")
        spec = ModelSpec(preset=name)
        engines[p] = Engine(spec)
        if knobs:
            changed = {k: (int(v) if v.isdigit() else v) for k, v in (kv.split("=") for kv in knobs.split(","))}
            engines[p].schedule = replace(engines[p].schedule, **changed)
    figures: dict[str, dict[str, list[float]]] = {p: {} for p in args.presets}
    for p, e in engines.items():  # warm-up: first calls pay one-off allocation costs
        stream_figures(e, 8)
        flow_ms_per_chunk(e)
    for _ in range(args.repeats):
        for p, e in engines.items():
            f = figures[p]
            f.setdefault("t3 B=1", []).append(t3_ms_per_token(e, args.tokens, 1))
            f.setdefault("flow", []).append(flow_ms_per_chunk(e))
            first, rtf, samples = stream_figures(e, args.tokens)
            f.setdefault("first", []).append(first)
            f.setdefault("rtf", []).append(rtf)
            f["samples"] = [samples]
    print(f"Turbo vs base, {args.tokens} tokens per request, {args.threads} torch thread(s), torch {torch.__version__}, "
          f"{platform.machine()} CPU, median of {args.repeats} alternating repeats; /proc/loadavg at start: {load}.\n")
    print("| preset | model | flow steps x rows | prompt window (tokens) | T3 ms/token (B=1) | flow ms/chunk (16-token hop) | first audio (s) | RTF | samples |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p, e in engines.items():
        f = {k: statistics.median(v) for k, v in figures[p].items()}
        rows = 1 if e.model == "turbo" else 2
        print(f"| {p} | {e.model} | {e.schedule.n_timesteps} x {rows} | {e.schedule.prompt_tokens} | {f['t3 B=1']:.1f} | {f['flow']:.0f} | "
              f"{f['first']:.3f} | {f['rtf']:.3f} | {int(f['samples'])} |")


if __name__ == "__main__":
    main()
