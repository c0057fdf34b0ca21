"""Batched vs one-request-per-call throughput of the CFM and HiFiGAN stage workers (a script, not a test).

Usage:  .venv/bin/python benchmarks/bench_batching.py [--preset small] [--concurrency 1 2 4 8] [--tokens 25]
                                                    [--reps 2] [--threads 1] [--out FILE.md]

Drives the stage workers in-process exactly as the stage loop does (`handle` every message, then
`work` until idle), with the built-in random weights, for c concurrent requests that all arrive at
once with all their input (an upstream stage faster than this one: the stage's own throughput):

  * CFM: c requests of --tokens speech tokens each, default schedule (first chunk 4 tokens,
    10 Euler steps, prompt window 50 tokens of a 150-token prompt);
  * HiFiGAN: c requests of 2 x --tokens mel frames each, cut as CFM cuts them (8, 16, 32, 64 ... frames).

Each configuration runs in three modes side by side, alternating, --reps times: `padded` (one
padded call for every job of a unit of work: the GPU default), `exact` (the same schedule, each
job its own solo call: the CPU default, bit-identical to solo) and `one per call` (one job per
unit of work: the behaviour before batching). Reported: aggregate audio seconds per wall second
(min time over reps), the ratios to one per call, and the time to each request's first chunk
(p50 / max). The machine's load average is recorded before and after.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipc.schema import Audio, End, Mel, Request, Tokens  # noqa: E402
from stages.cfm.conds import FlowConditionals  # noqa: E402
from stages.cfm.part import load_cfm_part  # noqa: E402
from stages.cfm.worker import FLOW_LIMITS, CFMWorker  # noqa: E402
from stages.common.spec import ModelSpec  # noqa: E402
from stages.hifigan.part import load_hifigan_part  # noqa: E402
from stages.hifigan.worker import VOCODER_LIMITS, HiFiGANWorker  # noqa: E402

TOKENS_PER_SECOND = 25  # S3 speech-token rate
PROMPT_TOKENS = 150  # a real voice prompt is ~150-157 tokens (6 s); the streaming window keeps the last 50
MEL_CHUNKS = (8, 16, 32, 64)  # frames per CFM chunk with the default schedule (4, 8, 16, 32 tokens), then 64 each


def loadavg() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def realistic_prompt(conds: FlowConditionals, n: int) -> FlowConditionals:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 6561, (1, n), generator=g)
    feat = (torch.randn(1, 2 * n, 80, generator=g) * 0.5 - 4.0).clamp(-5, 0)
    return FlowConditionals(tokens, feat, conds.embedding)


def cfm_inputs(c: int, tokens: int) -> list:
    msgs = []
    for i in range(c):
        rid = f"r{i}"
        ids = np.random.default_rng(i).integers(0, 6561, tokens)
        msgs += [Request(rid=rid, text="", params={"seed": i}), Tokens(rid=rid, start=0, ids=ids), End(rid=rid, totals={"tokens": tokens})]
    return msgs


def mel_inputs(c: int, tokens: int) -> list:
    msgs = []
    frames = 2 * tokens
    for i in range(c):
        rid = f"r{i}"
        mel = (np.random.default_rng(i).standard_normal((80, frames)) * 0.5 - 4.0).astype(np.float32)
        msgs.append(Request(rid=rid, text="", params={"seed": i}))
        a, k = 0, 0
        while a < frames:
            n = min(MEL_CHUNKS[min(k, len(MEL_CHUNKS) - 1)], frames - a)
            msgs.append(Mel(rid=rid, start=a, mel=np.ascontiguousarray(mel[:, a : a + n])))
            a, k = a + n, k + 1
        msgs.append(End(rid=rid, totals={"tokens": tokens, "frames": frames}))
    return msgs


def run_once(worker, msgs, kind) -> tuple[float, list[float]]:
    """Wall seconds to serve every request, and each request's time to its first chunk."""
    first: dict[str, float] = {}
    t0 = time.perf_counter()
    out = [m2 for m in msgs for m2 in worker.handle(m)]
    ends = 0
    while worker.busy():
        for m in worker.work():
            if isinstance(m, kind) and m.rid not in first:
                first[m.rid] = time.perf_counter() - t0
            ends += isinstance(m, End)
    wall = time.perf_counter() - t0
    assert ends == len({m.rid for m in msgs}), "every request must end"
    assert not [m for m in out if isinstance(m, kind)], "handle() must not compute"
    return wall, sorted(first.values())


def bench(name, make, inputs, kind, conc, tokens, reps) -> list[dict]:
    rows = []
    workers = {"one per call": make(1, True), "exact": make(None, True), "padded": make(None, False)}
    for w in workers.values():  # warm-up: allocator, oneDNN primitives for the shapes of both modes
        run_once(w, inputs(2, tokens), kind)
    for c in conc:
        res = {mode: [] for mode in workers}
        for _ in range(reps):
            for mode, w in workers.items():  # side by side, alternating
                res[mode].append(run_once(w, inputs(c, tokens), kind))
        audio = c * tokens / TOKENS_PER_SECOND
        row = dict(stage=name, c=c, audio=audio)
        for mode, runs in res.items():
            wall, firsts = min(runs, key=lambda r: r[0])
            row[mode] = dict(wall=wall, thr=audio / wall, p50=statistics.median(firsts), max=max(firsts))
        rows.append(row)
        print(f"{name} c={c}: " + ", ".join(f"{m} {row[m]['thr']:.2f} audio-s/s" for m in workers), file=sys.stderr, flush=True)
    return rows


def bench_encoder(part, reps: int, batch: int = 8) -> list[dict]:
    """Why CFM batches only the estimator: the encoder's share of a chunk's flow call, and what batching it could save."""
    flow = part.flow
    rows = []
    for window in (57, 117):  # first chunk (50 prompt + 4 + 3 tokens) and a steady one (50 + 32 + 32 + 3)
        tokens = torch.randint(0, 6561, (1, window), generator=torch.Generator().manual_seed(window))
        mu = flow.encode(tokens, finalize=False)
        frames = mu.size(-1)
        spks, cond, noise = torch.zeros(1, 80), torch.zeros(1, 80, frames), torch.randn(1, 80, frames)
        x = flow.input_embedding(tokens.repeat(batch, 1))  # [B, T, 512]: equal lengths, an upper bound of the gain

        def best(fn):
            fn()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        with torch.no_grad():
            enc = best(lambda: flow.encode(tokens, finalize=False))
            enc_b = best(lambda: flow.encoder(x))
            solve = best(lambda: flow.solve(mu, spks, cond, noise))
        rows.append(dict(tokens=window, frames=frames, enc=enc, enc_b=enc_b, solve=solve, batch=batch))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--tokens", type=int, default=25, help="speech tokens per request (25 = 1 s of audio)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a stage process gets cores / 3; 1 on 2 cores)")
    ap.add_argument("--stages", nargs="+", default=["cfm", "hifigan"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(args.threads)
    spec = ModelSpec(preset=args.preset)
    load_before = loadavg()
    rows, enc_rows = [], []
    if "cfm" in args.stages:
        part = load_cfm_part(spec)
        part = dataclasses.replace(part, conds=realistic_prompt(part.conds, PROMPT_TOKENS))

        def make_cfm(max_jobs, exact):
            limits = FLOW_LIMITS if max_jobs is None else dataclasses.replace(FLOW_LIMITS, max_jobs=max_jobs)
            return CFMWorker(part, limits=limits, exact=exact)

        enc_rows = bench_encoder(part, args.reps)
        rows += bench("cfm", make_cfm, cfm_inputs, Mel, args.concurrency, args.tokens, args.reps)
    if "hifigan" in args.stages:
        hift = load_hifigan_part(spec)

        def make_voc(max_jobs, exact):
            limits = VOCODER_LIMITS if max_jobs is None else dataclasses.replace(VOCODER_LIMITS, max_jobs=max_jobs)
            return HiFiGANWorker(hift, limits=limits, exact=exact)

        rows += bench("hifigan", make_voc, mel_inputs, Audio, args.concurrency, args.tokens, args.reps)
    load_after = loadavg()
    lines = [
        f"# Stage batching benchmark: padded and exact batching vs one request per call ({args.preset}, CPU)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_batching.py {' '.join(argv)}`".rstrip(),
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, python {platform.python_version()}",
        f"Load average (1/5/15 min) before: {load_before}, after: {load_after}",
        f"{args.tokens} tokens ({args.tokens / TOKENS_PER_SECOND:g} s of audio) per request, all requests arriving at once; "
        f"built-in random weights, fp32; min wall time over {args.reps} alternating runs per mode. "
        "Throughput = aggregate audio seconds per wall second; first chunk = time from the start to the request's first "
        "chunk. padded = one padded call per unit of work; exact = the same schedule, one solo call per job (the CPU "
        "default); one per call = one job per unit of work.",
        "",
        "| stage | requests | audio-s/s: one per call / exact / padded | exact, padded vs one per call "
        "| first chunk p50 / max (s): one per call | exact | padded |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, e, p = r["one per call"], r["exact"], r["padded"]
        lines.append(f"| {r['stage']} | {r['c']} | {a['thr']:.2f} / {e['thr']:.2f} / {p['thr']:.2f} "
                     f"| {e['thr'] / a['thr']:.2f}x, {p['thr'] / a['thr']:.2f}x "
                     f"| {a['p50']:.2f} / {a['max']:.2f} | {e['p50']:.2f} / {e['max']:.2f} | {p['p50']:.2f} / {p['max']:.2f} |")
    if enc_rows:
        lines += [
            "",
            "Encoder vs estimator in one CFM chunk call (why only the estimator's Euler steps are batched): "
            "encode = `Flow.encode` of the window; solve = the 10 Euler steps (20 estimator rows); batched encoder = "
            f"{enc_rows[0]['batch']} equal-length windows in one encoder call (an upper bound of what batching it saves).",
            "",
            "| window tokens | frames | encode (ms) | 10-step solve (ms) | encoder share | "
            f"{enc_rows[0]['batch']} x encode (ms) | batched encoder (ms) | saving, share of 8 whole calls |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in enc_rows:
            n = r["batch"]
            lines.append(f"| {r['tokens']} | {r['frames']} | {r['enc'] * 1e3:.1f} | {r['solve'] * 1e3:.1f} "
                         f"| {r['enc'] / (r['enc'] + r['solve']):.1%} | {n * r['enc'] * 1e3:.1f} | {r['enc_b'] * 1e3:.1f} "
                         f"| {(n * r['enc'] - r['enc_b']) / (n * (r['enc'] + r['solve'])):.1%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
