"""Command line of the pipeline benchmark (run by benchmarks/bench_pipeline.py and `tts-pipeline bench`).

Writes <out-dir>/pipeline-<date>-<device>-<preset>.{json,md} and the PNGs beside them,
prints the markdown on stdout; progress and warnings go to stderr.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

from benchmarks.harness.report import ROOT, device_name, markdown, metadata, targets, write_json
from benchmarks.harness.workload import PRESET_DEFAULTS, SWEEPS, Workload, plan

SWEEP_ALIASES = {"first-chunk": "first_chunk_tokens", "steps": "n_timesteps", "concurrency": "concurrency"}
DEFAULT_OUT = ROOT / "benchmarks" / "results"


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tts-pipeline bench", description=__doc__.split("\n")[0] + " Time to first audio, RTF, playback "
        "underrun and stage/wire time, pipelined against sequential, over first-chunk sizes, solver steps and "
        "concurrency.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESET_DEFAULTS), help="built-in model sizes (random weights)")
    ap.add_argument("--checkpoint", help="checkpoint directory (real weights; --preset then only picks workload defaults)")
    ap.add_argument("--device", default="cpu", help="torch device of every stage and of the sequential engine")
    ap.add_argument("--modes", default="pipelined,sequential",
                    help="comma list of pipelined, sequential, http (`tts-pipeline http`, compared with pipelined)")
    ap.add_argument("--sweeps", default="first-chunk,steps,concurrency",
                    help=f"comma list of {', '.join(SWEEP_ALIASES)} (one knob varied at a time), or none (baseline only)")
    ap.add_argument("--first-chunk", type=_ints, default=SWEEPS["first_chunk_tokens"], help="first-chunk token counts")
    ap.add_argument("--steps", type=_ints, default=SWEEPS["n_timesteps"], help="flow solver step counts")
    ap.add_argument("--concurrency", type=_ints, default=SWEEPS["concurrency"], help="concurrent client counts")
    ap.add_argument("--texts", type=_ints, default=None, help="text ids of the built-in set to use (default: all)")
    ap.add_argument("--tokens", type=int, default=None, help="speech tokens for every text (default: per text, scaled)")
    ap.add_argument("--token-scale", type=float, default=None, help="scale of the nominal per-text token counts (preset default)")
    ap.add_argument("--reps", type=int, default=None, help="measured passes over the texts per cell and mode (preset default)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up requests per mode, excluded (preset default)")
    ap.add_argument("--seed", type=int, default=1234, help="request seed of text i is seed + i")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per stage process (0 = cores / 3)")
    ap.add_argument("--t3-threads", type=int, default=0, help="torch threads of the T3 stage process (0 = as --threads)")
    ap.add_argument("--seq-threads", type=int, default=0, help="torch threads of the sequential engine (0 = all cores)")
    ap.add_argument("--max-inflight", type=int, default=0, help="T3 slots of the pipeline (0 = the largest concurrency)")
    ap.add_argument("--max-queue", type=int, default=60, help="requests the pipeline admits beyond --max-inflight (then 'server busy')")
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where the JSON, markdown and PNGs go")
    ap.add_argument("--name", help="file stem (default pipeline-<date>-<device>-<preset>)")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="extra request parameter for every request, e.g. vocoder_lookahead_frames=4 (repeatable)")
    ap.add_argument("--fill-concurrency", action="store_true",
                    help="each pass runs max(texts, concurrency) requests, cycling the texts, so N clients really run "
                         "N at once (default: one request per text per pass)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    return ap


def _params(items: list[str]) -> list[tuple[str, object]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --param wants KEY=VALUE, got {item!r}")
        try:
            out.append((key, int(value)))
        except ValueError:
            try:
                out.append((key, float(value)))
            except ValueError:
                out.append((key, value))
    return out


def build(args: argparse.Namespace) -> tuple[Workload, dict]:
    d = PRESET_DEFAULTS[args.preset]
    workload = Workload(preset=args.preset, seed=args.seed,
                        token_scale=args.token_scale if args.token_scale is not None else d["token_scale"],
                        tokens=args.tokens, reps=args.reps if args.reps is not None else d["reps"],
                        warmup=args.warmup if args.warmup is not None else d["warmup"],
                        text_ids=tuple(args.texts) if args.texts else None, extra=tuple(_params(args.param)),
                        fill=args.fill_concurrency)
    chosen = {"first_chunk_tokens": args.first_chunk, "n_timesteps": args.steps, "concurrency": args.concurrency}
    names = [s.strip() for s in args.sweeps.split(",") if s.strip() and s.strip() != "none"]
    bad = [n for n in names if n not in SWEEP_ALIASES]
    if bad:
        raise SystemExit(f"error: unknown sweep(s) {', '.join(bad)}; choose from {', '.join(SWEEP_ALIASES)} or none")
    sweeps = {SWEEP_ALIASES[n]: chosen[SWEEP_ALIASES[n]] for n in names} or {"first_chunk_tokens": (4,)}
    return workload, sweeps


def main(argv: list[str] | None = None, prog_command: str | None = None) -> dict:
    args = parser().parse_args(argv)
    workload, sweeps = build(args)
    modes_wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes_wanted or set(modes_wanted) - {"pipelined", "sequential", "http"}:
        raise SystemExit("error: --modes takes pipelined, sequential and/or http")
    from pipeline.models import ModelSpec

    from benchmarks.harness.modes import make_modes
    from benchmarks.harness.runner import run_plan

    spec = ModelSpec(checkpoint=Path(args.checkpoint) if args.checkpoint else None, preset=args.preset, device=args.device)
    cells = plan(sweeps)
    max_inflight = args.max_inflight or max(c.knobs.get("concurrency", 1) for c in cells)
    say = lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"{len(cells)} cell(s) x {len(modes_wanted)} mode(s), {len(workload.requests())} request(s) each; starting modes")
    t0 = time.perf_counter()
    modes = make_modes(modes_wanted, spec, args.threads, args.seq_threads, max(1, max_inflight), args.t3_threads,
                       max_queue=args.max_queue)
    try:
        run_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        run_args["command"] = prog_command or "python benchmarks/bench_pipeline.py " + shlex.join(argv or sys.argv[1:])
        run_args["max_inflight"] = max_inflight
        meta = metadata(run_args, workload, modes, args.device)
        results = run_plan(modes, workload, cells, progress=say)
    finally:
        for m in modes.values():
            m.close()
    meta["sweeps"] = {k: list(v) for k, v in sweeps.items()}
    doc = {"meta": meta, "cells": results, "targets": targets(results, args.preset)}
    doc["meta"]["wall_s"] = time.perf_counter() - t0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / (args.name or f"pipeline-{dt.date.today().isoformat()}-{device_name(args.device)}-{args.preset}")
    md = markdown(doc)
    if not args.no_plots:
        from benchmarks.harness.plots import PlotsUnavailable, draw_all

        try:
            pngs = draw_all(doc, stem, args.first_chunk)
            doc["meta"]["pictures"] = [p.name for p in pngs]
            md += "\n## Pictures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
        except PlotsUnavailable as e:
            say(f"warning: {e}")
    write_json(stem.with_name(stem.name + ".json"), doc)
    stem.with_name(stem.name + ".md").write_text(md)
    say(f"wrote {stem}.json, {stem}.md in {doc['meta']['wall_s']:.0f} s")
    print(md)
    return doc
