"""The run's record: environment metadata, the JSON document, the markdown tables and the target checks."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
from pathlib import Path

from benchmarks.harness.metrics import DEFINITIONS
from benchmarks.harness.workload import BASELINE, SWEEPS

ROOT = Path(__file__).resolve().parents[2]
# The issue's goals on a 2-core CPU (reported against, never asserted).
TARGET_STEADY_RATIO = 1.5  # pipelined steady-state chunk rate / sequential, `small` preset
TARGET_TTFB_RATIO = 0.4  # TTFB(first chunk 4 tokens) / TTFB(first chunk 25 tokens)
TARGET_WIRE_FRAC = 0.02  # ZeroMQ + serialisation time / stage compute time
TARGET_HTTP_OVERHEAD_MS = 5.0  # TTFB p50 at the HTTP client minus TTFB p50 of the in-process API, 1 client


def commit() -> str | None:
    """HEAD's hash (read-only), with '+dirty' when the work tree has changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: str) -> str:
    """A short device tag for file names: cpu, cuda, ..."""
    return device.split(":")[0]


def metadata(args: dict, workload, modes: dict, device: str) -> dict:
    import torch

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit(),
        "preset": workload.preset,
        "checkpoint": args.get("checkpoint"),
        "schedule": _schedule_defaults(),
        "baseline": BASELINE,
        "workload": workload.describe(),
        "threads": {name: m.threads_note() for name, m in modes.items()},
        "load_average_start": load,
        "args": args,
        "definitions": DEFINITIONS,
    }


def _schedule_defaults() -> dict:
    from stages.cfm.schedule import ChunkSchedule

    return ChunkSchedule().to_dict()


def find(cells: list[dict], sweep: str, value) -> dict | None:
    want = {**BASELINE, sweep: value}
    return next((c for c in cells if c["knobs"] == want), None)


def targets(cells: list[dict], preset: str) -> dict:
    """The issue's three goals, measured on this run's cells."""
    out = {}
    base = find(cells, "first_chunk_tokens", BASELINE["first_chunk_tokens"])
    if base and "steady_chunks_per_s.p50" in base["ratios"]:
        r = base["ratios"]["steady_chunks_per_s.p50"]
        out["steady_chunk_rate_ratio"] = {"value": r, "target": f">= {TARGET_STEADY_RATIO} (small preset)",
                                          "met": r >= TARGET_STEADY_RATIO, "preset": preset}
    a, b = find(cells, "first_chunk_tokens", 4), find(cells, "first_chunk_tokens", 25)
    if a and b:
        for mode in a["modes"]:
            r = a["modes"][mode]["summary"]["ttfb_s"]["p50"] / b["modes"][mode]["summary"]["ttfb_s"]["p50"]
            out[f"ttfb_4_over_25.{mode}"] = {"value": r, "target": f"<= {TARGET_TTFB_RATIO}", "met": r <= TARGET_TTFB_RATIO}
    if base and "pipelined" in base["modes"]:
        s = base["modes"]["pipelined"]["summary"]
        w = s["wire_frac"]["mean"]
        out["wire_frac"] = {"value": w, "target": f"<= {TARGET_WIRE_FRAC}", "met": w <= TARGET_WIRE_FRAC,
                            "per_stage": {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("wire_frac.")}}
    base_c1 = find(cells, "concurrency", 1) or base
    if base_c1 and "http_overhead" in base_c1:
        d = base_c1["http_overhead"]["ttfb_s.p50.diff_ms"]
        out["http_ttfb_overhead_ms"] = {"value": d, "target": f"<= {TARGET_HTTP_OVERHEAD_MS:g} ms p50 at c = 1",
                                        "met": d <= TARGET_HTTP_OVERHEAD_MS}
    return out


def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=1, default=_jsonable, allow_nan=True) + "\n")


def _jsonable(x):
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON: {type(x).__name__}")


def _f(x, spec=".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(doc: dict) -> str:
    m, cells = doc["meta"], doc["cells"]
    modes = list(cells[0]["modes"]) if cells else []
    lines = [f"# Pipeline benchmark — {m['date'][:10]}, {m['device']} ({m['cpu_count']} cores), preset `{m['preset']}`", "",
             f"Command: `{m['args'].get('command', '')}`", "",
             f"torch {m['torch']}, Python {m['python']}, commit `{m['commit']}`, load average at start "
             f"{m['load_average_start']}. Threads: " + "; ".join(f"{k}: {v}" for k, v in m["threads"].items()) + ".",
             "", "Workload (ignore_eos, fixed tokens per text; 1 token = 40 ms of audio): " +
             ", ".join(f"text {t['id']} {t['tokens']} tokens" for t in m["workload"]["texts"]) +
             f"; {m['workload']['reps']} measured pass(es) per cell and mode, {m['workload']['warmup']} warm-up "
             f"request(s) per mode excluded; seed {m['workload']['seed']}. Baseline: {m['baseline']}."
             + (f" Extra parameters on every request: {dict(m['workload']['extra'])}." if m["workload"].get("extra") else "")
             + (" Each pass runs max(texts, concurrency) requests, cycling the texts, so N clients run N requests "
                "at once." if m["workload"].get("fill") else ""), "",
             "RTF = generation time / audio duration, generation time = submission to last chunk at the consumer. "
             "Underrun = worst stall of a real-time player started at the first chunk. "
             "Steady rate = chunks after the first / (last - first arrival). Wire = ZeroMQ + (de)serialisation time "
             "as a fraction of stage compute (stage-reported). Ratio = pipelined / sequential.", ""]
    for sweep, values in m.get("sweeps", SWEEPS).items():
        rows = [(v, find(cells, sweep, v)) for v in values]
        rows = [(v, c) for v, c in rows if c]
        if not rows:
            continue
        lines += [f"## {sweep}", "",
                  "| " + sweep + " | mode | TTFB p50 / p90 / p99 (s) | e2e p50 (s) | RTF mean | worst underrun (s) | "
                  "steady chunks/s p50 | throughput (audio s / s) | wire % |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v, c in rows:
            for mode in modes:
                s = c["modes"][mode]["summary"]
                lines.append(f"| {v} | {mode} | {_f(s['ttfb_s']['p50'])} / {_f(s['ttfb_s']['p90'])} / {_f(s['ttfb_s']['p99'])} | "
                             f"{_f(s['e2e_s']['p50'])} | {_f(s['rtf']['mean'])} | {_f(s['underrun_max_s']['max'])} | "
                             f"{_f(s['steady_chunks_per_s']['p50'], '.1f')} | {_f(s['throughput_x'], '.2f')} | "
                             f"{_f(100 * s['wire_frac']['mean'], '.2f')} |")
            r = c["ratios"]
            if r:
                lines.append(f"| {v} | **ratio** | {_f(r['ttfb_s.p50'], '.2f')} | {_f(r['e2e_s.p50'], '.2f')} | "
                             f"{_f(r['rtf.mean'], '.2f')} | | {_f(r['steady_chunks_per_s.p50'], '.2f')} | "
                             f"{_f(r['throughput_x'], '.2f')} | |")
        lines.append("")
    lines += _http_section(cells)
    base = find(cells, "first_chunk_tokens", BASELINE["first_chunk_tokens"])
    if base and "pipelined" in base["modes"]:
        s = base["modes"]["pipelined"]["summary"]
        stages = sorted(k.split(".", 1)[1] for k in s if k.startswith("busy_s."))
        lines += ["## Per-stage time, baseline cell, pipelined (mean per request)", "",
                  "| stage | busy (s) | wire (s) | wire / busy |", "|---|---|---|---|"]
        for st in stages:
            lines.append(f"| {st} | {_f(s[f'busy_s.{st}']['mean'], '.4f')} | {_f(s[f'wire_s.{st}']['mean'], '.4f')} | "
                         f"{_f(100 * s[f'wire_frac.{st}'], '.2f')} % |")
        lines.append("")
    if doc.get("targets"):
        lines += ["## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
        for k, t in doc["targets"].items():
            lines.append(f"| {k} | {_f(t['value'], '.3f')} | {t['target']} | {'yes' if t['met'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def _http_section(cells: list[dict]) -> list[str]:
    """HTTP client vs in-process API, per concurrency cell (present when both modes ran)."""
    rows = sorted((c for c in cells if "http_overhead" in c), key=lambda c: (c["sweep"], c["concurrency"]))
    if not rows:
        return []
    lines = ["## HTTP overhead: `tts-pipeline http` (TTFB at the client's first body byte) vs the in-process API", "",
             "| cell | TTFB p50 API / HTTP (s) | diff p50 (ms) | TTFB p95 API / HTTP (s) | diff p95 (ms) | "
             "e2e p50 diff (ms) | throughput HTTP / API |", "|---|---|---|---|---|---|---|"]
    for c in rows:
        p, h, o = c["modes"]["pipelined"]["summary"], c["modes"]["http"]["summary"], c["http_overhead"]
        lines.append(f"| {c['sweep']}={c['knobs'][c['sweep']]} | {_f(p['ttfb_s']['p50'])} / {_f(h['ttfb_s']['p50'])} | "
                     f"{_f(o['ttfb_s.p50.diff_ms'], '+.1f')} | {_f(p['ttfb_s']['p95'])} / {_f(h['ttfb_s']['p95'])} | "
                     f"{_f(o['ttfb_s.p95.diff_ms'], '+.1f')} | {_f(o['e2e_s.p50.diff_ms'], '+.1f')} | "
                     f"{_f(o['throughput_x.ratio'], '.2f')} |")
    return lines + [""]
