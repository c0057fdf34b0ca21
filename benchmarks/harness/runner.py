"""Runs the plan: warm-up, then every cell in every mode, modes alternated so drift in machine load hits both.

Each cell runs `reps` passes over the texts per mode; passes alternate between the modes
(A B, then B A, ...), so a slow spell on a shared machine is spread over both.
"""
from __future__ import annotations

import logging
import time

from benchmarks.harness.metrics import summarize_records
from benchmarks.harness.workload import BASELINE, Cell, Workload

log = logging.getLogger("bench.runner")


def jobs_for(workload: Workload, knobs: dict, text_ids: list[int]) -> list:
    return [(i, workload.texts[i][0], workload.params(i, knobs)) for i in text_ids]


def warm_up(modes: dict, workload: Workload) -> None:
    """Requests whose figures are thrown away: first-call allocations, lazy imports, caches."""
    ids = workload.selected()
    for mode in modes.values():
        for k in range(workload.warmup):
            mode.run(jobs_for(workload, BASELINE, [ids[k % len(ids)]]), 1)


def run_cell(modes: dict, workload: Workload, cell: Cell) -> dict:
    """One cell in every mode: per-request records, per-mode summaries and pipelined/sequential ratios."""
    conc = cell.knobs.get("concurrency", 1)
    records = {name: [] for name in modes}
    order = list(modes)
    t0 = time.perf_counter()
    for rep in range(workload.reps):
        for name in (order if rep % 2 == 0 else order[::-1]):
            jobs = jobs_for(workload, cell.knobs, workload.pass_ids(conc))
            records[name].append(modes[name].run(jobs, conc))
    out = {"sweep": cell.sweep, "knobs": dict(cell.knobs), "concurrency": conc, "modes": {}}
    for name, passes in records.items():
        flat = [r for p in passes for r in p]
        summary = summarize_records(flat)
        # throughput per pass (one closed-loop batch), averaged: passes are separated in time
        tps = [summarize_records(p)["throughput_x"] for p in passes]
        summary["throughput_x"] = sum(tps) / len(tps) if tps else float("nan")
        out["modes"][name] = {"summary": summary, "requests": [_record_json(r) for r in flat]}
    out["ratios"] = ratios(out["modes"])
    overhead = http_overhead(out["modes"])
    if overhead:
        out["http_overhead"] = overhead
    log.info("cell %s %s done in %.1f s", cell.sweep, cell.knobs, time.perf_counter() - t0)
    return out


def ratios(modes: dict) -> dict:
    """pipelined / sequential for the headline figures (> 1 means the pipeline's figure is larger)."""
    if not {"pipelined", "sequential"} <= set(modes):
        return {}
    p, s = modes["pipelined"]["summary"], modes["sequential"]["summary"]
    out = {}
    for key, stat in (("ttfb_s", "p50"), ("e2e_s", "p50"), ("rtf", "mean"), ("steady_chunks_per_s", "p50"),
                      ("steady_audio_x", "p50")):
        a, b = p[key][stat], s[key][stat]
        out[f"{key}.{stat}"] = a / b if b else float("nan")
    out["throughput_x"] = p["throughput_x"] / s["throughput_x"] if s["throughput_x"] else float("nan")
    return out


def http_overhead(modes: dict) -> dict:
    """http - pipelined (ms) and http / pipelined for TTFB p50/p95 and e2e p50: what the HTTP layer costs."""
    if not {"pipelined", "http"} <= set(modes):
        return {}
    p, h = modes["pipelined"]["summary"], modes["http"]["summary"]
    out = {}
    for key, stat in (("ttfb_s", "p50"), ("ttfb_s", "p95"), ("e2e_s", "p50")):
        a, b = h[key][stat], p[key][stat]
        out[f"{key}.{stat}.diff_ms"] = 1000 * (a - b)
        out[f"{key}.{stat}.ratio"] = a / b if b else float("nan")
    out["throughput_x.ratio"] = h["throughput_x"] / p["throughput_x"] if p["throughput_x"] else float("nan")
    return out


def _record_json(r) -> dict:
    from benchmarks.harness.metrics import request_metrics

    return {"text_id": r.text_id, "tokens": r.tokens, "arrivals_s": [round(a, 6) for a in r.arrivals],
            "samples": r.samples, "stats": r.stats, "metrics": request_metrics(r)}


def run_plan(modes: dict, workload: Workload, cells: list[Cell], progress=None) -> list[dict]:
    warm_up(modes, workload)
    results = []
    for k, cell in enumerate(cells):
        if progress:
            progress(f"[{k + 1}/{len(cells)}] {cell.sweep}={cell.knobs[cell.sweep]}")
        results.append(run_cell(modes, workload, cell))
    return results
