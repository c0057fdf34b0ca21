"""The `http` mode: the same requests through `tts-pipeline http` (a server process with its own pipeline).

Each client thread keeps one keep-alive connection (httpx) and streams POST
/v1/audio/speech with response_format pcm; an arrival is taken at each network read of
the body, so TTFB is the first body byte at the client. The server runs the same stage
configuration as the pipelined mode (threads, T3 slots), so http - pipelined is what the
HTTP layer costs: the event loop, the per-request thread, encoding, loopback TCP and the
client's parsing.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

from benchmarks.harness.metrics import RequestRecord
from benchmarks.harness.modes import Job, run_clients

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 600.0  # the server's pipeline loads and warms up like the pipelined mode's


class HttpMode:
    name = "http"

    def __init__(self, spec, threads: int, max_inflight: int, t3_threads: int = 0, max_queue: int = 60):
        import httpx

        args = [sys.executable, str(ROOT / "bin" / "tts-pipeline"), "http", "--port", "0",
                "--threads", str(threads), "--max-inflight", str(max_inflight), "--max-queue", str(max_queue),
                "--max-streams", str(max(64, max_inflight + max_queue)), "--device", spec.device, "--preset", spec.preset]
        if t3_threads:
            args += ["--t3-threads", str(t3_threads)]
        if spec.checkpoint is not None:
            args += ["--checkpoint", str(spec.checkpoint)]
        self.threads, self.max_inflight, self.t3_threads = threads, max_inflight, t3_threads
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.url = None
        ready = threading.Event()

        def read_stderr() -> None:  # also keeps the pipe drained for the whole run
            for line in self.proc.stderr:
                if line.startswith("listening on "):
                    self.url = line.split()[-1]
                elif line.startswith("ready: "):
                    ready.set()
                elif line.startswith("error"):
                    print(f"bench: http server: {line.rstrip()}", file=sys.stderr)
            ready.set()

        threading.Thread(target=read_stderr, daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or self.proc.poll() is not None or self.url is None:
            self.close()
            raise RuntimeError("the http server did not become ready")
        self._local = threading.local()
        self._clients: list = []  # this pass's clients, closed at its end
        self._lock = threading.Lock()
        self._httpx = httpx

    def threads_note(self) -> str:
        t3 = self.t3_threads or self.threads or "cores/3"
        return (f"`tts-pipeline http` process (its own pipeline: 3 stage processes, torch threads t3 {t3}, "
                f"cfm/hifigan {self.threads or 'cores/3'}), 1 keep-alive connection per client thread")

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._httpx.Client(timeout=600)
            with self._lock:
                self._clients.append(client)
        return client

    def _stream(self, text: str, params: dict, rec: RequestRecord) -> Iterator[int]:
        body = {"input": text, "response_format": "pcm", **params}
        carry = 0  # an odd byte of a sample split across reads
        with self._client().stream("POST", f"{self.url}/v1/audio/speech", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"http {r.status_code}: {r.read()[:300]!r}")
            for piece in r.iter_raw():
                n = carry + len(piece)
                carry = n % 2
                yield n // 2

    def run(self, jobs: list[Job], concurrency: int) -> list[RequestRecord]:
        try:
            return run_clients(self.name, jobs, concurrency, self._stream)
        finally:
            with self._lock:
                clients, self._clients = self._clients, []
            for c in clients:
                c.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
