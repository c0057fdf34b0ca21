"""The GPU benchmark of benchmarks/gpu_check.sh: eager vs CUDA graphs side by side, written as JSON + markdown.

Sections (each timed on its own; a section that fails records its error and the others still run; one
past the time budget is recorded as skipped; the JSON is rewritten after every section, so a run cut
short still leaves what it measured):

- t3: T3 ms per tick per batch bucket (1..64 requests), eager tick vs replayed graphs; the capture time.
- flow: flow ms per chunk (first chunk's window and a steady one, `n_timesteps` steps), eager vs graphs,
  one row and a batch of rows; the start-up capture time of every (rows, frames) bucket.
- hift: vocoder ms per chunk (first chunk, steady chunk), eager float32 with the float64 phase carry.
- ipc: one mel chunk's hand-off between two processes on one GPU, byte frames vs CUDA IPC handle
  (producer's blocked time behind queued GPU work, consumer's time until the frames are on its device).
- pipeline: the three-process pipeline per mode (graphs, eager, graphs + CUDA IPC): start-up time, GPU
  memory, then TTFB p50/p95, RTF, underruns and throughput at each concurrency; the first-audio knob
  sweep (first chunk size, its solver steps, the vocoder holdback) at one stream.
- fidelity: what those knobs cost, streamed vs offline (bench_streaming's mel distance and SNR).

Random weights (the built-in stand-in at the preset's sizes): figures measure the engine, not speech.
`--dry-run` is the CPU rehearsal (tiny sizes, seconds): the same code paths, graphs replaced by the
padded-bucket eager steps they record.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home again."
# first-audio knobs swept at one stream (graphs mode): first chunk size, its solver steps, the vocoder holdback
KNOBS = [{"first_chunk_tokens": f, "first_chunk_timesteps": s, "vocoder_lookahead_frames": v}
         for f in (2, 4) for s in (None, 5) for v in ("exact", 4)]
# The GPU run (sized so tests + benchmark fit 8 minutes) and the CPU rehearsal (tiny, seconds).
# reps: timed repetitions of a micro-benchmark (the first is a warm-up); mode_min_s / cell_min_s: seconds of
# budget a pipeline start / a concurrency cell needs before it is begun (a start at full size takes ~30 s).
# The rehearsal has no budget: it runs every section once, to prove the code paths, and measures nothing.
FULL = dict(preset="chatterbox", dtype="bfloat16", concurrency=(1, 8, 32, 64), tokens=100, single_reps=5, ticks=20,
            t3_buckets=(1, 2, 4, 8, 16, 32, 64), n_timesteps=10, ipc_chunks=30, budget_s=380, reps=4, knobs=KNOBS,
            knob_reps=3, mode_min_s=40, cell_min_s=15)
DRY = dict(preset="tiny", dtype="float32", concurrency=(1, 2), tokens=12, single_reps=1, ticks=3, t3_buckets=(1, 2),
           n_timesteps=2, ipc_chunks=3, budget_s=math.inf, reps=2, knobs=[KNOBS[0], KNOBS[-1]], knob_reps=1,
           mode_min_s=0, cell_min_s=0)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def pct(values, q):
    from benchmarks.harness.metrics import percentile

    vals = [v for v in values if v is not None and not math.isnan(v)]
    return percentile(vals, q) if vals else math.nan


def median(values):
    return pct(values, 50)


# --- T3 ticks ------------------------------------------------------------------------------------
def bench_t3(a) -> dict:
    from stages.t3.checkpoint import build_builtin_t3
    from stages.t3.conds import builtin_t3_conditionals
    from stages.t3.config import T3Config
    from stages.t3.generate import admission, new_t3_batch
    from stages.t3.graphs import attach_tick_graphs
    from stages.t3.sampling import SamplingParams

    cfg = T3Config.from_name(a.preset)
    model, conds = build_builtin_t3(cfg), builtin_t3_conditionals(cfg)
    dtype = getattr(torch, a.dtype)
    top = max(a.t3_buckets)
    out = {"buckets": list(a.t3_buckets), "ms_per_tick": {}, "capture_s": None}
    for mode in ("eager", "graphs"):
        batch = new_t3_batch(model, cfg, max_slots=top, max_len=256, device=a.device, dtype=dtype)
        if mode == "graphs":
            g = attach_tick_graphs(batch, capture=a.cuda)  # spans 64, 128, 256
            if g is None:
                raise RuntimeError("T3 graphs failed to capture (see the log)")
            out["capture_s"] = round(g.capture_s, 3)
        times = {}
        for b in a.t3_buckets:
            adms = [admission(batch, f"b{b}.{i}", [5 + i % 50, 9, 23, 7], conds,
                              SamplingParams(seed=i, ignore_eos=True, max_new_tokens=200)) for i in range(b)]
            batch.admit(adms)
            for _ in range(3):  # warm-up ticks
                batch.tick()
            ticks = []
            for _ in range(a.ticks):
                t0 = time.perf_counter()
                batch.tick()  # ends with the id fetch: a host sync, so the wall time is the tick's
                ticks.append((time.perf_counter() - t0) * 1e3)
            times[b] = round(median(ticks), 3)
            for adm in adms:
                batch.cancel(adm.rid)
            batch.compact()
        out["ms_per_tick"][mode] = times
        del batch
    if a.cuda:
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


# --- flow chunks -----------------------------------------------------------------------------------
def bench_flow(a) -> dict:
    from stages.cfm.batch import FlowBatch
    from stages.cfm.graphs import attach_flow_graphs
    from stages.cfm.part import load_cfm_part, new_cfm_stream
    from stages.cfm.worker import FLOW_LIMITS
    from stages.common.params import parse_params
    from stages.common.spec import ModelSpec

    part = load_cfm_part(ModelSpec(preset=a.preset, device=a.device, dtype=a.dtype))
    stream = new_cfm_stream(part, parse_params({"seed": 1, "n_timesteps": a.n_timesteps}))
    stream.add(torch.randint(0, 6561, (a.tokens,), generator=torch.Generator().manual_seed(5)).tolist())
    jobs = list(iter(stream.plan, None))
    first, steady = jobs[0], max(jobs, key=lambda j: j.frames)
    out = {"first_frames": first.frames, "steady_frames": steady.frames, "n_timesteps": a.n_timesteps, "ms_per_chunk": {}}
    for mode in ("eager", "graphs"):
        batch = FlowBatch(part.flow, FLOW_LIMITS, exact=False)
        if mode == "graphs":
            g = attach_flow_graphs(batch, capture=a.cuda)
            if g is None:
                raise RuntimeError("flow graphs failed to capture (see the log)")
            out["capture_s"], out["captured_shapes"] = round(g.capture_s, 3), len(g.shapes)
        row = {}
        for name, jobset in (("first", [first]), ("steady", [steady]), ("steady_x8", [steady] * 8)):
            samples = []
            for rep in range(a.reps):  # the first is a warm-up
                for i, job in enumerate(jobset):
                    batch.add(f"{name}.{rep}.{i}", job)
                sync(a.device)
                t0 = time.perf_counter()
                while batch.rows:
                    batch.step()
                sync(a.device)
                samples.append((time.perf_counter() - t0) * 1e3)
            row[name] = round(median(samples[1:]), 3)
        out["ms_per_chunk"][mode] = row
    return out


# --- vocoder chunks --------------------------------------------------------------------------------
def bench_hift(a) -> dict:
    from stages.common.params import parse_params
    from stages.common.spec import ModelSpec
    from stages.hifigan.part import load_hifigan_part, new_vocoder_stream

    hift = load_hifigan_part(ModelSpec(preset=a.preset, device=a.device))
    out = {}
    for name, frames in (("first_8_frames", 8), ("steady_64_frames", 64)):
        samples = []
        for rep in range(a.reps):  # the first is a warm-up
            st = new_vocoder_stream(hift, parse_params({"seed": rep}))
            st.push(torch.full((80, 40), -5.0))  # context before the timed chunk
            mel = torch.rand(80, frames, generator=torch.Generator().manual_seed(rep)) * 4 - 6
            sync(a.device)
            t0 = time.perf_counter()
            st.push(mel)
            sync(a.device)
            samples.append((time.perf_counter() - t0) * 1e3)
        out[name] = round(median(samples[1:]), 3)
    return {"ms_per_chunk": out, "dtype": "float32 (phase carry float64)"}


# --- the hand-off between two processes on one GPU ----------------------------------------------------
def _ipc_producer(conn, chunks: int, frames: int) -> None:
    """Child process: per chunk, queue ~a flow step's worth of GPU work, then hand the mel off both ways."""
    import numpy as np

    from ipc import cuda_ipc, framing
    from ipc.schema import Mel

    x = torch.randn(2048, 2048, device="cuda")
    for i in range(2 * chunks):
        via_ipc = i % 2 == 1
        for _ in range(4):
            x = (x @ x).tanh_()  # queued work the hand-off must not wait for (a CFM stream is never idle)
        mel = x[:80, :frames].contiguous()
        t0 = time.perf_counter()
        if via_ipc:
            frames_out = framing.encode(Mel(rid="r", start=0, mel=np.zeros((80, 0), np.float32), cuda=cuda_ipc.share(mel)))
        else:
            frames_out = framing.encode(Mel(rid="r", start=0, mel=mel))  # the device -> host copy syncs the stream
        blocked = time.perf_counter() - t0
        conn.send((via_ipc, blocked, [bytes(f) for f in frames_out]))
        assert conn.recv() == "ok"
    torch.cuda.synchronize()
    conn.send("done")


def bench_ipc(a) -> dict:
    if not a.cuda:
        return {"skipped": "needs CUDA"}
    import torch.multiprocessing as mp

    from ipc import cuda_ipc, framing

    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    frames = 64
    p = ctx.Process(target=_ipc_producer, args=(theirs, a.ipc_chunks, frames), daemon=True)
    p.start()
    got = {"bytes": {"producer": [], "consumer": []}, "ipc": {"producer": [], "consumer": []}}
    try:
        while True:
            msg = ours.recv()
            if msg == "done":
                break
            via_ipc, blocked, raw = msg
            t0 = time.perf_counter()
            m = framing.decode(raw)
            mel = cuda_ipc.receive(m.cuda, "cuda") if via_ipc else torch.from_numpy(m.mel.copy()).to("cuda")
            torch.cuda.synchronize()
            used = time.perf_counter() - t0
            key = "ipc" if via_ipc else "bytes"
            got[key]["producer"].append(blocked * 1e3)
            got[key]["consumer"].append(used * 1e3)
            del mel
            ours.send("ok")
    finally:
        p.join(60)
        if p.is_alive():
            p.kill()
    res = {k: {side: round(median(v[1:]), 4) for side, v in d.items()} for k, d in got.items()}
    res["frames_per_chunk"] = frames
    res["note"] = ("producer: time the CFM process is blocked per chunk (bytes: the device->host copy waits for its "
                   "queued GPU work); consumer: decode until the frames are on the vocoder's device")
    return res


# --- the pipeline ----------------------------------------------------------------------------------
def _stream_fn(pipe):
    def stream(text, params, rec):
        handle = pipe.submit(text, **params)
        for chunk in handle.chunks():
            yield len(chunk.pcm)
        rec.stats = dict(handle.end.stats) if handle.end is not None else {}
    return stream


def _cell(pipe, mode: str, conc: int, n: int, tokens: int, extra: dict | None = None, base_seed: int = 0) -> dict:
    from benchmarks.harness.metrics import request_metrics, throughput
    from benchmarks.harness.modes import run_clients

    jobs = [(i, TEXT, {"seed": base_seed + i, "ignore_eos": True, "max_new_tokens": tokens, **(extra or {})})
            for i in range(n)]
    records = run_clients(mode, jobs, conc, _stream_fn(pipe))
    per = [request_metrics(r) for r in records]
    return {"concurrency": conc, "requests": n, "tokens": tokens,
            "ttfb_p50_ms": round(pct([m["ttfb_s"] for m in per], 50) * 1e3, 1),
            "ttfb_p95_ms": round(pct([m["ttfb_s"] for m in per], 95) * 1e3, 1),
            "rtf_p50": round(pct([m["rtf"] for m in per], 50), 4),
            "underrun_requests": sum(1 for m in per if m["underruns"]),
            "underrun_max_s": round(max(m["underrun_max_s"] for m in per), 3),
            "throughput_x": round(throughput(records), 2)}


def _gpu_used_gib(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(torch.device(device))
    return (total - free) / 2**30


def bench_pipeline(a, budget_left) -> dict:
    from pipeline.api import Pipeline
    from pipeline.launcher import PipelineConfig
    from stages.common.spec import ModelSpec

    spec = ModelSpec(preset=a.preset, device=a.device, dtype=a.dtype)
    modes = [("graphs", {"cuda_graphs": True}, a.concurrency), ("eager", {"cuda_graphs": False}, a.concurrency),
             ("graphs+ipc", {"cuda_graphs": True, "cuda_ipc": True}, a.concurrency[:1] + a.concurrency[-2:-1])]
    if not a.cuda:  # the CPU rehearsal: the stage options are CUDA-only, one eager pipeline
        modes = [("eager", {}, a.concurrency)]
    out = {"modes": {}, "knobs": []}
    for mode, options, concs in modes:
        if budget_left() < a.mode_min_s:
            out["modes"][mode] = {"skipped": "time budget"}
            continue
        before = _gpu_used_gib(a.device)
        t0 = time.perf_counter()
        pipe = Pipeline(PipelineConfig(model=spec, max_inflight=max(a.concurrency), threads=a.threads,
                                       stage_options=options))
        try:
            pipe.start()
            startup = time.perf_counter() - t0
            after = _gpu_used_gib(a.device)
            res = {"startup_s": round(startup, 2), "cells": [],
                   "gpu_memory_gib": None if before is None else round(after - before, 2)}
            _cell(pipe, mode, 1, a.single_reps, a.tokens, base_seed=900)  # warm-up requests, not reported
            for conc in concs:
                if budget_left() < a.cell_min_s:
                    res["cells"].append({"concurrency": conc, "skipped": "time budget"})
                    continue
                n = a.single_reps if conc == 1 else conc
                res["cells"].append(_cell(pipe, mode, conc, n, a.tokens))
            if mode == ("graphs" if a.cuda else "eager"):
                for knobs in a.knobs:
                    if budget_left() < a.cell_min_s:
                        break
                    extra = {k: v for k, v in knobs.items() if v is not None}
                    cell = _cell(pipe, mode, 1, a.knob_reps, a.tokens, extra)
                    out["knobs"].append({**knobs, "ttfb_p50_ms": cell["ttfb_p50_ms"], "ttfb_p95_ms": cell["ttfb_p95_ms"]})
            out["modes"][mode] = res
        finally:
            pipe.close()
    return out


def bench_fidelity(a) -> dict:
    from benchmarks.bench_streaming import offline, realistic_prompt, snr_db, streamed
    from pipeline.sequential import Engine
    from stages.common.spec import ModelSpec

    engine = Engine(ModelSpec(preset=a.preset, device=a.device, dtype=a.dtype))
    engine.cfm.conds = realistic_prompt(engine, 157)
    tokens = torch.randint(0, 6561, (a.tokens,), generator=torch.Generator().manual_seed(7)).tolist()
    ref_mel, ref_wav, _ = offline(engine, tokens)
    rows = []
    for knobs in [{}] + a.knobs:
        params = {k: v for k, v in knobs.items() if v is not None}
        r = streamed(engine, tokens, params)
        wav = torch.cat([c.pcm for c in r["chunks"]])
        mel = r["mel"].float().cpu()
        rows.append({**knobs, "mel_rel_l2": round(float((mel - ref_mel.float().cpu()).norm() / ref_mel.float().cpu().norm()), 5),
                     "wav_snr_db": round(snr_db(ref_wav.cpu(), wav.cpu()), 1)})
    return {"rows": rows, "tokens": a.tokens}


# --- report ----------------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    s = res["sections"]
    lines = [f"# GPU check: {res['device']}", "",
             f"torch {res['torch']}, preset `{res['preset']}` (random weights), dtype {res['dtype']}, "
             f"{'CPU dry run (tiny; figures are not GPU figures)' if res['dry_run'] else 'CUDA'}; "
             f"MPS {'on' if res['mps'] else 'off'}; total {res.get('elapsed_s', '?')} s.", ""]

    def sec(name):
        v = s.get(name)
        if v is None or "error" in v or "skipped" in v:
            lines.append(f"- **{name}**: {(v or {}).get('error') or (v or {}).get('skipped') or 'not run'}")
            return None
        return v

    if (t := sec("t3")):
        lines += ["## T3 ms per tick", "", "| bucket | eager | graphs | speed-up |", "|---|---|---|---|"]
        for b in t["buckets"]:
            e, g = t["ms_per_tick"]["eager"].get(str(b), t["ms_per_tick"]["eager"].get(b)), \
                t["ms_per_tick"]["graphs"].get(str(b), t["ms_per_tick"]["graphs"].get(b))
            lines.append(f"| {b} | {e} | {g} | {e / g:.2f}x |" if e and g else f"| {b} | {e} | {g} | |")
        lines += ["", f"Capture of every bucket x span: {t['capture_s']} s.", ""]
    if (f := sec("flow")):
        lines += [f"## Flow ms per chunk ({f['n_timesteps']} steps; first {f['first_frames']} frames, steady "
                  f"{f['steady_frames']})", "", "| chunk | eager | graphs |", "|---|---|---|"]
        for k in ("first", "steady", "steady_x8"):
            lines.append(f"| {k} | {f['ms_per_chunk']['eager'][k]} | {f['ms_per_chunk']['graphs'][k]} |")
        lines += ["", f"Capture of {f.get('captured_shapes')} (rows, frames) shapes at start-up: {f.get('capture_s')} s.", ""]
    if (h := sec("hift")):
        lines += ["## HiFT ms per chunk", "", " | ".join(f"{k}: {v}" for k, v in h["ms_per_chunk"].items()), ""]
    if (i := sec("ipc")):
        lines += ["## Mel hand-off CFM -> HiFiGAN (ms per chunk)", "", "| path | producer blocked | consumer |", "|---|---|---|",
                  f"| byte frames | {i['bytes']['producer']} | {i['bytes']['consumer']} |",
                  f"| CUDA IPC | {i['ipc']['producer']} | {i['ipc']['consumer']} |", "", i["note"], ""]
    if (p := sec("pipeline")):
        lines += ["## Pipeline", "", "| mode | start-up s | GPU GiB | c | TTFB p50 ms | TTFB p95 ms | RTF p50 | underrun reqs | throughput x |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for mode, r in p["modes"].items():
            if "skipped" in r:
                lines.append(f"| {mode} | skipped: {r['skipped']} | | | | | | | |")
                continue
            for c in r["cells"]:
                if "skipped" in c:
                    lines.append(f"| {mode} | | | {c['concurrency']} | skipped | | | | |")
                    continue
                lines.append(f"| {mode} | {r['startup_s']} | {r['gpu_memory_gib']} | {c['concurrency']} | {c['ttfb_p50_ms']} | "
                             f"{c['ttfb_p95_ms']} | {c['rtf_p50']} | {c['underrun_requests']}/{c['requests']} | {c['throughput_x']} |")
        if p["knobs"]:
            lines += ["", "First-audio knobs at one stream:", "", "| first_chunk_tokens | first_chunk_timesteps | vocoder_lookahead | TTFB p50 ms | p95 ms |",
                      "|---|---|---|---|---|"]
            for k in p["knobs"]:
                lines.append(f"| {k['first_chunk_tokens']} | {k['first_chunk_timesteps'] or 'n_timesteps'} | "
                             f"{k['vocoder_lookahead_frames']} | {k['ttfb_p50_ms']} | {k['ttfb_p95_ms']} |")
        lines.append("")
    if (fi := sec("fidelity")):
        lines += ["## Fidelity of the knobs (streamed vs offline)", "", "| first_chunk_tokens | first_chunk_timesteps | vocoder_lookahead | mel rel L2 | wav SNR dB |",
                  "|---|---|---|---|---|"]
        for r in fi["rows"]:
            lines.append(f"| {r.get('first_chunk_tokens', 'default')} | {r.get('first_chunk_timesteps') or 'n_timesteps'} | "
                         f"{r.get('vocoder_lookahead_frames', 'exact')} | {r['mel_rel_l2']} | {r['wav_snr_db']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu-check.json and gpu-check.md")
    ap.add_argument("--dry-run", action="store_true", help="CPU rehearsal at tiny sizes")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting new sections past this many seconds")
    ap.add_argument("--sections", default="t3,flow,hift,ipc,pipeline,fidelity")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    prof = DRY if args.dry_run else FULL
    for k, v in prof.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    args.cuda = torch.device(args.device).type == "cuda"
    if args.cuda and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    if args.dry_run:
        torch.set_num_threads(max(1, args.threads or 1))
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    res = {"device": torch.cuda.get_device_name(0) if args.cuda else f"CPU ({platform.processor() or platform.machine()})",
           "torch": torch.__version__, "python": platform.python_version(), "preset": args.preset, "dtype": args.dtype,
           "dry_run": args.dry_run, "mps": bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")) or os.path.exists("/tmp/nvidia-mps"),
           "started_unix": time.time(), "sections": {}}

    def budget_left() -> float:
        return args.budget_s - (time.perf_counter() - t_start)

    fns = {"t3": bench_t3, "flow": bench_flow, "hift": bench_hift, "ipc": bench_ipc,
           "pipeline": lambda a: bench_pipeline(a, budget_left), "fidelity": bench_fidelity}
    failed = False
    for name in [s for s in args.sections.split(",") if s]:
        if budget_left() <= 0:
            res["sections"][name] = {"skipped": "time budget"}
            continue
        t0 = time.perf_counter()
        print(f"gpu_bench: {name} ...", file=sys.stderr, flush=True)
        try:
            res["sections"][name] = fns[name](args)
        except Exception as e:
            failed = True
            res["sections"][name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
            print(f"gpu_bench: {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        res["sections"][name]["section_s"] = round(time.perf_counter() - t0, 2)
        if args.cuda:
            torch.cuda.empty_cache()
        res["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        (args.out / "gpu-check.json").write_text(json.dumps(res, indent=1, default=str))
        (args.out / "gpu-check.md").write_text(markdown(res))
    print(markdown(res))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
