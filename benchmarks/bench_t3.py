"""Benchmark the T3 tick on this machine: admission (cold and cached voice prefix), decode tick by batch size, KV memory.

    .venv/bin/python benchmarks/bench_t3.py [--presets tiny small] [--steps 32] [--batches 1,2,4,8,16] [--threads N]

Built-in random weights (speed does not depend on the values). Every request runs with
ignore_eos, so each makes exactly --steps tokens. A tick's figure is the median wall time of
one `T3Batch.tick()` (one forward of all rows + the vectorised sampling chain + the host sync)
with B requests active; per-token = tick / B. Prints markdown (stdout).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from stages.t3.batch import DEFAULT_MAX_LEN
from stages.t3.checkpoint import build_builtin_t3
from stages.t3.conds import builtin_t3_conditionals
from stages.t3.config import T3Config
from stages.t3.generate import admission, new_t3_batch
from stages.t3.sampling import SamplingParams

TEXT_TOKENS = 40  # a sentence of ~40 BPE tokens (~8 s of speech)
REPEATS = 5  # admission timings per preset (median reported)


def bench_preset(name: str, steps: int, max_len: int, batches: list[int]) -> dict:
    cfg = T3Config.from_name(name)
    model = build_builtin_t3(cfg)
    batch = new_t3_batch(model, cfg, max_slots=max(batches), max_len=max_len)
    conds = builtin_t3_conditionals(cfg)
    text = [(7 * i) % 250 + 3 for i in range(TEXT_TOKENS)]

    def adm(rid, seed=0):
        return admission(batch, rid, text, conds, SamplingParams(seed=seed, max_new_tokens=steps + 1, ignore_eos=True))

    def admit_ms(cold: bool) -> float:
        times = []
        for i in range(REPEATS):
            if cold:
                batch.prefixes.clear()
            t = time.perf_counter()
            batch.admit([adm(f"p{i}")])
            times.append(time.perf_counter() - t)
            batch.cancel(f"p{i}")
            batch.compact()
        return 1e3 * statistics.median(times)

    admit_ms(False)  # warm-up
    cold, warm = admit_ms(True), admit_ms(False)
    ticks = {}
    for b in batches:
        batch.admit([adm(f"b{i}", i) for i in range(b)])
        per = []
        while batch.active:
            t = time.perf_counter()
            batch.tick()
            per.append(time.perf_counter() - t)
        ticks[b] = 1e3 * statistics.median(per[:-1] or per)
    return dict(name=name, params_m=sum(p.numel() for p in model.parameters()) / 1e6, cold_ms=cold, warm_ms=warm,
                prefill_len=cfg.prefill_len(TEXT_TOKENS), ticks=ticks, slot_mib=batch.cache.slot_bytes() / 2**20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batches", default="1,2,4,8,16", help="comma list of active requests per tick")
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(x) for x in args.batches.split(",")]
    load = open("/proc/loadavg").read().strip() if os.path.exists("/proc/loadavg") else "n/a"
    print(f"# T3 tick benchmark\n\nMachine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads; "
          f"torch {torch.__version__}; fp32; KV slot max_len {args.max_len}; text {TEXT_TOKENS} tokens; "
          f"/proc/loadavg at start: {load}.\n")
    print("| preset | params (M) | prefill len | admission, cold prefix (ms) | admission, cached prefix (ms) | "
          + " | ".join(f"tick B={b} (ms) [per token]" for b in batches) + " | KV slot (MiB) |")
    print("|---|---|---|---|---|" + "---|" * len(batches) + "---|")
    for name in args.presets:
        r = bench_preset(name, args.steps, args.max_len, batches)
        cells = " | ".join(f"{r['ticks'][b]:.1f} [{r['ticks'][b] / b:.2f}]" for b in batches)
        print(f"| {r['name']} | {r['params_m']:.1f} | {r['prefill_len']} | {r['cold_ms']:.1f} | {r['warm_ms']:.1f} | "
              f"{cells} | {r['slot_mib']:.1f} |", flush=True)
    print("\n## KV-cache memory per slot (computed from the config, K+V, 2 CFG rows)\n")
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
