"""The HTTP layer's own cost: `tts-pipeline http`'s app over an instant backend, TTFB at the client vs calling it directly.

The pipeline benchmark's http mode (`bench_pipeline.py --modes pipelined,http`) compares
the whole path with the in-process API, but on a shared 2-core machine the pipeline's own
jitter is tens of milliseconds, far above what HTTP adds. Here the backend yields a
request's chunks from memory at once (960 x 25 samples in 5 chunks, like a 25-token
request), so what remains is the server (uvicorn, FastAPI, validation, the request's
thread, encoding, the event loop), loopback TCP and the client (httpx): the floor the HTTP
layer adds to every request. Both sides run in this one invocation, alternated.

Usage: python benchmarks/bench_http_floor.py [--concurrency 1,8,32] [--requests 200] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNKS = (1440, 6240, 7680, 7680, 960)  # samples per chunk of a 25-token request (sums to 960 x 25)


class InstantBackend:
    """A backend whose every request has its audio ready: the chunks come from memory at once."""

    remote = False

    def __init__(self):
        from pipeline.http.backend import Served
        from stages.cfm.schedule import ChunkSchedule

        self._served = Served("chatterbox", ChunkSchedule())
        self.pcm = [np.zeros(n, np.float32) for n in CHUNKS]

    def describe(self):
        return {"description": "instant backend (bench_http_floor)"}

    def served(self):
        return self._served

    def start(self):
        pass

    def wait_started(self, timeout=None):
        return None

    def close(self):
        pass

    def status(self):
        from pipeline.http.backend import EngineStatus

        return EngineStatus(True, active=0, queued=0)

    def open(self, text, params):
        from pipeline.http.backend import Synthesis

        pcm = self.pcm

        class Instant(Synthesis):
            rid, end_stats, completed = "instant", {}, False

            def __iter__(self):
                start = 0
                for chunk in pcm:
                    yield start, chunk
                    start += len(chunk)
                self.completed = True

            def cancel(self):
                pass

            def close(self):
                pass

        return Instant()


def serve() -> None:
    from pipeline.http.app import ServerSettings
    from pipeline.http.server import serve as run

    sys.exit(run(InstantBackend(), "127.0.0.1", 0, ServerSettings(max_streams=1024), lambda m: print(m, file=sys.stderr)))


def percentile(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def closed_loop(concurrency: int, total: int, one) -> list[float]:
    """`concurrency` threads run `one()` until `total` requests are done; the TTFBs, in seconds."""
    out, lock, left = [], threading.Lock(), [total]

    def client():
        state = {}
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            t = one(state)
            with lock:
                out.append(t)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=200, help="measured requests per cell and side")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / f"http-floor-{dt.date.today()}-cpu.md")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve()
    import httpx

    load_start = Path("/proc/loadavg").read_text().strip()
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = None
    for line in proc.stderr:
        if line.startswith("listening on "):
            url = line.split()[-1]
        if line.startswith("ready: "):
            break
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep the pipe drained
    backend = InstantBackend()
    body = {"input": "Hello there.", "response_format": "pcm", "seed": 1}

    def over_http(state) -> float:
        client = state.get("c") or state.setdefault("c", httpx.Client(timeout=60))
        t0 = time.perf_counter()
        with client.stream("POST", f"{url}/v1/audio/speech", json=body) as r:
            first = None
            for _ in r.iter_raw():
                first = first or time.perf_counter() - t0
        return first

    def direct(state) -> float:
        from pipeline.params import resolve_params

        t0 = time.perf_counter()
        resolve_params({"seed": 1}, backend.served().schedule)  # the validation the API does too
        for _ in backend.open("Hello there.", {}):
            return time.perf_counter() - t0

    rows = []
    try:
        closed_loop(4, 50, over_http)  # warm-up: imports, first-call costs, connections
        for c in (int(x) for x in args.concurrency.split(",")):
            figs = {"api": [], "http": []}
            for k in range(4):  # alternated halves, so load drift hits both
                for side in (("api", "http") if k % 2 == 0 else ("http", "api")):
                    figs[side] += closed_loop(c, args.requests // 4, direct if side == "api" else over_http)
            rows.append((c, {s: (percentile(v, 50), percentile(v, 95)) for s, v in figs.items()}))
            print(f"c={c}: {rows[-1][1]}", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(30)
    load_end = Path("/proc/loadavg").read_text().strip()
    lines = [f"# HTTP layer floor — {dt.date.today()}, cpu ({os.cpu_count()} cores)", "",
             f"Command: `python benchmarks/bench_http_floor.py {' '.join(sys.argv[1:])}`", "",
             f"/proc/loadavg at start: `{load_start}`; at end: `{load_end}`. {args.requests} requests per cell and side, "
             "alternated in quarters. The backend yields a 25-token request's 5 chunks (24 000 samples) from memory at once, "
             "so TTFB here is what the HTTP path itself costs: uvicorn, FastAPI, body validation, the request's thread, "
             "pcm encoding, the event loop, loopback TCP and the httpx client, to the client's first body byte. "
             "`direct` is the same validation and the first chunk taken in-process.", "",
             "| concurrency | direct TTFB p50 / p95 (ms) | HTTP TTFB p50 / p95 (ms) | HTTP adds p50 / p95 (ms) |",
             "|---|---|---|---|"]
    for c, f in rows:
        (a50, a95), (h50, h95) = f["api"], f["http"]
        lines.append(f"| {c} | {1e3 * a50:.3f} / {1e3 * a95:.3f} | {1e3 * h50:.2f} / {1e3 * h95:.2f} | "
                     f"{1e3 * (h50 - a50):.2f} / {1e3 * (h95 - a95):.2f} |")
    md = "\n".join(lines) + "\n"
    args.out.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
