"""Concurrency sweep: c requests at once through the Python API, this checkout against a baseline checkout, side by side.

    .venv/bin/python benchmarks/bench_concurrency.py --baseline /tmp/rr-base \
        [--preset small] [--tokens 25] [--concurrency 1,2,4,8,16] [--rounds 1] [--reps 2] [--name concurrency-...]

Each checkout runs in its own child process (`PYTHONPATH=<checkout>`, so its `pipeline` and
`stages` are imported, not this one's) that starts one `Pipeline` (max_inflight = the largest c)
and keeps it for the whole sweep. For each c the parent asks both children, in alternating
order (A B, B A, ...: load drift on a shared machine hits both; `--reps` passes over the
levels, each pass alternating again), to run c client threads that
each submit `--rounds` requests back to back (`--rounds 1`: a burst of c requests at once).
Request j of a level has seed `--seed` + j and the same text, ignore_eos and exactly
`--tokens` tokens, so the same request appears at every level and its audio can be compared.

Figures per (checkout, c), all taken where the audio is consumed (benchmarks/harness/metrics.py):
aggregate audio seconds per wall second (first submission -> last chunk) and its ratio to c = 1
(the same requests one after another; the median over the passes), TTFB p50/p95, per-stream
underrun (worst stall of a real-time player, p95 and max over the streams; total stall per
stream, mean), e2e p95 (over every pass's requests), each stage's compute seconds per request
(stage-reported `busy_s`: a tick's time is shared by the requests in it), and whether every
request's audio is bit-identical at every level and pass. Writes
benchmarks/results/<name>.{json,md} and prints the markdown on stdout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
TEXT = "Hello there."  # a short sentence: the requests' cost is their 25 tokens, not a long prefill
WARMUP_REQUESTS = 2  # per child before the sweep (first-call costs, lazy imports)


# --- the child: one checkout's pipeline (imports only that checkout, never this one's harness) ---------
def serve(args: argparse.Namespace) -> None:
    import pipeline
    from pipeline.api import Pipeline
    from pipeline.launcher import PipelineConfig
    from pipeline.models import ModelSpec

    config = PipelineConfig(model=ModelSpec(preset=args.preset), threads=args.threads, max_inflight=args.max_inflight)
    with Pipeline(config) as tts:
        for i in range(WARMUP_REQUESTS):
            tts.synthesize(TEXT, seed=i, ignore_eos=True, max_new_tokens=args.tokens)
        print(json.dumps({"ready": True, "pipeline": pipeline.__file__}), flush=True)
        for line in sys.stdin:
            job = json.loads(line)
            if job.get("quit"):
                break
            print(json.dumps(run_level(tts, job)), flush=True)


def run_level(tts, job: dict) -> dict:
    """job["c"] client threads, each taking the next of job["requests"] (seeds) until none is left."""
    todo = list(enumerate(job["seeds"]))
    lock = threading.Lock()
    records, errors = [], []

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                j, seed = todo.pop(0)
            t0 = time.perf_counter()
            rec = {"j": j, "seed": seed, "submit_t": t0, "arrivals": [], "samples": []}
            h = hashlib.blake2b(digest_size=16)
            try:
                handle = tts.submit(job["text"], seed=seed, ignore_eos=True, max_new_tokens=job["tokens"])
                for chunk in handle.chunks():
                    rec["arrivals"].append(time.perf_counter() - t0)
                    rec["samples"].append(len(chunk.pcm))
                    h.update(chunk.pcm.tobytes())
                rec["stats"] = dict(handle.end.stats) if handle.end is not None else {}
            except Exception as e:  # reported, never silently dropped
                errors.append(f"{type(e).__name__}: {e}")
                return
            rec["pcm_hash"] = h.hexdigest()
            with lock:
                records.append(rec)

    threads = [threading.Thread(target=client) for _ in range(job["c"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"c": job["c"], "records": sorted(records, key=lambda r: r["j"]), "errors": errors}


# --- the parent -----------------------------------------------------------------------------------------
class Child:
    def __init__(self, label: str, checkout: Path, args: argparse.Namespace, max_inflight: int):
        self.label, self.checkout = label, checkout
        env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, str(HERE), "--serve", "--preset", args.preset, "--tokens", str(args.tokens),
               "--threads", str(args.threads), "--max-inflight", str(max_inflight)]
        self.proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = json.loads(self._line())
        self.pipeline_file = hello["pipeline"]
        if not Path(self.pipeline_file).resolve().is_relative_to(checkout.resolve()):
            raise SystemExit(f"error: {label} imported {self.pipeline_file}, not {checkout}")

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"error: the {self.label} child exited (code {self.proc.wait()})")
        return line

    def run(self, job: dict) -> dict:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def git_head(path: Path) -> str:
    r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True)
    d = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path, capture_output=True, text=True)
    return r.stdout.strip() + ("+dirty" if d.stdout.strip() else "")


def summarize_level(passes: list[dict], tokens: int) -> dict:
    """One (checkout, c) over its passes: throughput per pass (median), the rest over every request."""
    import statistics

    from benchmarks.harness.metrics import RequestRecord, summarize_records, throughput

    per_pass = [[RequestRecord(p["label"], r["j"], tokens, r["submit_t"], r["arrivals"], r["samples"], r.get("stats", {}))
                 for r in p["records"]] for p in passes]
    s = summarize_records([r for recs in per_pass for r in recs])
    tps = [throughput(recs) for recs in per_pass]
    return {"requests": sum(len(r) for r in per_pass), "errors": [e for p in passes for e in p["errors"]],
            "audio_s_per_s": statistics.median(tps), "audio_s_per_s_passes": tps,
            "ttfb_p50_s": s["ttfb_s"]["p50"], "ttfb_p95_s": s["ttfb_s"]["p95"], "e2e_p95_s": s["e2e_s"]["p95"],
            "underrun_max_p95_s": s["underrun_max_s"]["p95"], "underrun_max_max_s": s["underrun_max_s"]["max"],
            "underrun_total_mean_s": s["underrun_total_s"]["mean"],
            **{f"busy_{st}_s": s.get(f"busy_s.{st}", {}).get("mean", float("nan")) for st in ("t3", "cfm", "hifigan")}}


def markdown(doc: dict) -> str:
    m = doc["meta"]
    lines = [f"# Concurrency sweep, {m['date']}, {m['preset']}, {m['tokens']} tokens per request", "",
             f"Command: `{m['command']}`", "",
             f"Machine: {m['cpus']} CPUs, torch {m['torch']}, {m['threads']} torch thread(s) per stage; "
             f"/proc/loadavg at start `{m['loadavg_start']}`, at end `{m['loadavg_end']}` (a shared machine: "
             "read the ratios, taken from alternated runs, rather than single figures).", "",
             "| checkout | commit |", "|---|---|"]
    lines += [f"| {lab} | `{info['commit']}` ({info['path']}) |" for lab, info in m["checkouts"].items()]
    lines += ["", "| c | checkout | audio s/s | x c=1 | TTFB p50 (s) | TTFB p95 (s) | e2e p95 (s) | worst stall p95 (s) | "
              "worst stall max (s) | stall total mean (s) | compute s/request T3, CFM, HiFiGAN | errors |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in doc["levels"]:
        for lab, s in row["checkouts"].items():
            lines.append(f"| {row['c']} | {lab} | {s['audio_s_per_s']:.3f} | {s['x_c1']:.2f} | {s['ttfb_p50_s']:.2f} | "
                         f"{s['ttfb_p95_s']:.2f} | {s['e2e_p95_s']:.2f} | {s['underrun_max_p95_s']:.2f} | "
                         f"{s['underrun_max_max_s']:.2f} | {s['underrun_total_mean_s']:.2f} | "
                         f"{s['busy_t3_s']:.2f}, {s['busy_cfm_s']:.2f}, {s['busy_hifigan_s']:.2f} | {len(s['errors'])} |")
    lines += ["", "| c | batched / baseline audio s/s | batched / baseline TTFB p95 | batched TTFB p95 / its c=1 | "
              "baseline / batched T3 compute per request |", "|---|---|---|---|---|"]
    for row in doc["levels"]:
        r = row["ratios"]
        lines.append(f"| {row['c']} | {r['throughput']:.2f} | {r['ttfb_p95']:.2f} | {r['ttfb_p95_vs_c1']:.2f} | "
                     f"{r['t3_compute']:.2f} |")
    lines += ["", "Solo-equal audio (every request's PCM bit-identical at every level, per checkout): "
              + ", ".join(f"{lab}: {v}" for lab, v in doc["audio_identical"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="a second checkout to compare against (e.g. a worktree of ca4d3da)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--tokens", type=int, default=25)
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--rounds", type=int, default=1, help="requests per client thread (1: a burst of c at once)")
    ap.add_argument("--reps", type=int, default=1, help="passes over the levels (each alternating the checkouts)")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per stage process (0 = cores / 3)")
    ap.add_argument("--max-inflight", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child's mode
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", help="file stem (default concurrency-<date>-cpu-<preset>)")
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args)
    if args.baseline is None:
        raise SystemExit("error: --baseline PATH (a second checkout) is required")
    sys.path.insert(0, str(ROOT))  # the parent's own harness (metrics); the children never import it
    import datetime as dt

    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    checkouts = {"batched": ROOT, "baseline": args.baseline.resolve()}
    say = lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    load_start = Path("/proc/loadavg").read_text().strip()
    children: dict[str, Child] = {}
    try:
        for lab, path in checkouts.items():
            say(f"starting the {lab} pipeline from {path}")
            children[lab] = Child(lab, path, args, max(levels))
        results: dict[int, dict[str, list[dict]]] = {c: {lab: [] for lab in checkouts} for c in levels}
        k = 0
        for rep in range(args.reps):
            for c in levels:
                order = list(children) if k % 2 == 0 else list(children)[::-1]
                k += 1
                for lab in order:
                    say(f"pass {rep + 1}/{args.reps} c={c} {lab}")
                    job = {"c": c, "text": TEXT, "tokens": args.tokens, "seeds": [args.seed + j for j in range(c * args.rounds)]}
                    results[c][lab].append({**children[lab].run(job), "label": lab})
    finally:
        for ch in children.values():
            ch.close()
    load_end = Path("/proc/loadavg").read_text().strip()
    import torch

    rows, identical = [], {}
    for lab in checkouts:
        hashes: dict[int, set] = {}
        for c in levels:
            for p in results[c][lab]:
                for r in p["records"]:
                    hashes.setdefault(r["seed"], set()).add(r["pcm_hash"])
        identical[lab] = "yes" if all(len(h) == 1 for h in hashes.values()) else \
            f"no ({sum(len(h) > 1 for h in hashes.values())} of {len(hashes)} requests differ)"
    c1 = {lab: summarize_level(results[levels[0]][lab], args.tokens) for lab in checkouts}
    for c in levels:
        summ = {lab: summarize_level(results[c][lab], args.tokens) for lab in checkouts}
        for lab, s in summ.items():
            s["x_c1"] = s["audio_s_per_s"] / c1[lab]["audio_s_per_s"]
        b, base = summ["batched"], summ["baseline"]
        rows.append({"c": c, "checkouts": summ, "ratios": {
            "throughput": b["audio_s_per_s"] / base["audio_s_per_s"], "ttfb_p95": b["ttfb_p95_s"] / base["ttfb_p95_s"],
            "ttfb_p95_vs_c1": b["ttfb_p95_s"] / c1["batched"]["ttfb_p95_s"], "t3_compute": base["busy_t3_s"] / b["busy_t3_s"]}})
    command = "python benchmarks/bench_concurrency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = {"meta": {"date": dt.date.today().isoformat(), "preset": args.preset, "tokens": args.tokens,
                    "rounds": args.rounds, "reps": args.reps, "levels": levels, "text": TEXT, "command": command,
                    "cpus": os.cpu_count(), "torch": torch.__version__, "threads": args.threads or "cores / 3",
                    "loadavg_start": load_start, "loadavg_end": load_end,
                    "checkouts": {lab: {"path": str(p), "commit": git_head(p), "pipeline": children[lab].pipeline_file}
                                  for lab, p in checkouts.items()}},
           "levels": rows, "audio_identical": identical,
           "raw": {str(c): results[c] for c in levels}}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / (args.name or f"concurrency-{doc['meta']['date']}-cpu-{args.preset}")
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    md = markdown(doc)
    stem.with_suffix(".md").write_text(md)
    say(f"wrote {stem}.json and {stem}.md")
    print(md)


if __name__ == "__main__":  # the pipelines spawn their stages: they re-import this file and must not re-run it
    main()
