"""The two modes under test, behind one interface: run a set of requests with N concurrent clients.

`PipelinedMode` drives the multi-process `Pipeline` (one started for the whole run: every
swept knob is a per-request parameter). `SequentialMode` drives the single-process
`Engine` in this process with all cores; N clients share it through a lock, i.e. it serves
one request at a time in arrival order, as a single-process server would. Every time is
taken where the audio is consumed, on this process's perf_counter.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from typing import Callable, Iterable, Iterator

from benchmarks.harness.metrics import RequestRecord

Job = tuple[int, str, dict]  # (text id, text, request parameters)


def run_clients(mode: str, jobs: list[Job], concurrency: int,
                stream: Callable[[str, dict, RequestRecord], Iterator[int]]) -> list[RequestRecord]:
    """A closed loop: `concurrency` client threads each take the next job, submit it, consume it to the end.

    `stream(text, params, record)` yields each chunk's sample count as it arrives (and may
    fill record.stats); the arrival time is taken here, right after the chunk is received.
    """
    todo: "queue.Queue[Job]" = queue.Queue()
    for j in jobs:
        todo.put(j)
    records: list[RequestRecord] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        while not errors:
            try:
                tid, text, params = todo.get_nowait()
            except queue.Empty:
                return
            rec = RequestRecord(mode, tid, params["max_new_tokens"], time.perf_counter())
            try:
                for n in stream(text, params, rec):
                    rec.arrivals.append(time.perf_counter() - rec.submit_t)
                    rec.samples.append(n)
            except BaseException as e:  # fail the run loudly rather than report partial figures
                errors.append(e)
                return
            with lock:
                records.append(rec)

    threads = [threading.Thread(target=client, name=f"bench-client-{i}", daemon=True)
               for i in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sorted(records, key=lambda r: r.submit_t)


class PipelinedMode:
    name = "pipelined"

    def __init__(self, spec, threads: int, max_inflight: int, t3_threads: int = 0, max_queue: int = 60):
        from pipeline.api import Pipeline
        from pipeline.launcher import PipelineConfig

        self.config = PipelineConfig(model=spec, threads=threads, max_inflight=max_inflight, max_queue=max_queue,
                                     stage_thread_counts={"t3": t3_threads} if t3_threads else {})
        self.pipeline = Pipeline(self.config)
        self.pipeline.start()

    def threads_note(self) -> str:
        counts = {st: self.config.stage_threads(st) for st in ("t3", "cfm", "hifigan")}
        return "3 stage processes, torch threads " + ", ".join(f"{k} {v}" for k, v in counts.items())

    def _stream(self, text: str, params: dict, rec: RequestRecord) -> Iterator[int]:
        handle = self.pipeline.submit(text, **params)
        for chunk in handle.chunks():
            yield len(chunk.pcm)
        rec.stats = dict(handle.end.stats) if handle.end is not None else {}

    def run(self, jobs: list[Job], concurrency: int) -> list[RequestRecord]:
        return run_clients(self.name, jobs, concurrency, self._stream)

    def close(self) -> None:
        self.pipeline.close()


class SequentialMode:
    name = "sequential"

    def __init__(self, spec, threads: int = 0):
        import torch

        from pipeline.sequential import Engine

        self.threads = threads or os.cpu_count() or 1  # all cores: the fair single-process baseline
        torch.set_num_threads(self.threads)
        self.engine = Engine(spec)
        self._busy = threading.Lock()  # one request at a time, like a single-process server

    def threads_note(self) -> str:
        return f"1 process x {self.threads} torch thread(s)"

    def _stream(self, text: str, params: dict, rec: RequestRecord) -> Iterator[int]:
        with self._busy:
            for chunk in self.engine.stream(text, params):
                yield chunk.pcm.numel()

    def run(self, jobs: list[Job], concurrency: int) -> list[RequestRecord]:
        return run_clients(self.name, jobs, concurrency, self._stream)

    def close(self) -> None:
        pass


def make_modes(names: Iterable[str], spec, threads: int, seq_threads: int, max_inflight: int, t3_threads: int = 0,
               max_queue: int = 60) -> dict:
    """Start every requested mode (the pipeline takes seconds: its processes load and warm up)."""
    modes = {}
    try:
        for n in names:
            if n == "pipelined":
                modes[n] = PipelinedMode(spec, threads, max_inflight, t3_threads, max_queue)
            elif n == "http":
                from benchmarks.harness.http_mode import HttpMode

                modes[n] = HttpMode(spec, threads, max_inflight, t3_threads, max_queue)
            else:
                modes[n] = SequentialMode(spec, seq_threads)
    except BaseException:
        for m in modes.values():
            m.close()
        raise
    return modes
