"""Benchmark the T3 stage on this machine: prefill time, per-token decode time, KV-cache memory.

    .venv/bin/python benchmarks/bench_t3.py [--presets tiny small] [--steps 64] [--max-len 512] [--threads N]

Built-in random weights (speed does not depend on the values). Decode runs with ignore_eos so
every request makes exactly --steps tokens; the figure is the median over those steps of one
`T3Session.step()` (sampling chain + one cached forward of both CFG rows). Prints markdown.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from stages.t3.checkpoint import build_builtin_t3
from stages.t3.conds import builtin_t3_conditionals
from stages.t3.config import T3Config
from stages.t3.generate import DEFAULT_MAX_LEN, T3Generator
from stages.t3.sampling import SamplingParams

TEXT_TOKENS = 40  # a sentence of ~40 BPE tokens (~8 s of speech)
REPEATS = 5  # prefill timings per preset (median reported)


def bench_preset(name: str, steps: int, max_len: int) -> dict:
    cfg = T3Config.from_name(name)
    t0 = time.perf_counter()
    model = build_builtin_t3(cfg)
    build_s = time.perf_counter() - t0
    gen = T3Generator(model, cfg, max_slots=1, max_len=max_len)
    conds = builtin_t3_conditionals(cfg)
    text = [(7 * i) % 250 + 3 for i in range(TEXT_TOKENS)]
    params = SamplingParams(seed=0, max_new_tokens=steps + 1, ignore_eos=True)
    gen.start(text, conds, params).close()  # warm-up
    prefill = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        s = gen.start(text, conds, params)
        prefill.append(time.perf_counter() - t)
        s.close()
    s = gen.start(text, conds, params)
    per_step = []
    try:
        while not s.finished:
            t = time.perf_counter()
            s.step()
            per_step.append(time.perf_counter() - t)
    finally:
        s.close()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    return dict(name=name, params_m=params_m, build_s=build_s, prefill_len=cfg.prefill_len(TEXT_TOKENS),
                prefill_ms=1e3 * statistics.median(prefill), decode_ms=1e3 * statistics.median(per_step[:-1]),
                steps=len(per_step) - 1, kv_mib=gen.pool.nbytes / 2**20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# T3 benchmark\n\nMachine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads "
          f"({platform.processor() or platform.platform()}); torch {torch.__version__}; fp32; "
          f"KV slot max_len {args.max_len}; text {TEXT_TOKENS} tokens; CFG batch 2; "
          f"load average at start {load}.\n")
    print("| preset | params (M) | prefill len | prefill (ms) | decode per token (ms, median) | steps | tokens/s | KV slot (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.presets:
        r = bench_preset(name, args.steps, args.max_len)
        print(f"| {r['name']} | {r['params_m']:.1f} | {r['prefill_len']} | {r['prefill_ms']:.1f} | "
              f"{r['decode_ms']:.2f} | {r['steps']} | {1e3 / r['decode_ms']:.0f} | {r['kv_mib']:.1f} |", flush=True)
    print("\n## KV-cache memory per request (computed from the config, K+V, 2 CFG rows)\n")
    print("| preset | per position | max_len 1536 (default) | full tables (cond + 2050 + 2 + 4096) |")
    print("|---|---|---|---|")
    for name in ("chatterbox", "small", "tiny"):
        cfg = T3Config.from_name(name)
        full = cfg.prefill_len(cfg.max_text_tokens) + cfg.max_speech_tokens
        row = [cfg.kv_cache_bytes(1), cfg.kv_cache_bytes(DEFAULT_MAX_LEN), cfg.kv_cache_bytes(full)]
        bf16 = cfg.kv_cache_bytes(DEFAULT_MAX_LEN, bytes_per_elem=2)
        print(f"| {name} | {row[0] / 2**10:.1f} KiB fp32 | {row[1] / 2**20:.0f} MiB fp32 ({bf16 / 2**20:.0f} MiB bf16) | "
              f"{row[2] / 2**30:.2f} GiB fp32 ({full} positions) |")


if __name__ == "__main__":
    main()
