"""The T3 stage process inside a running pipeline: hostile input on its socket, a short-lived starting thread,
a fast clean exit (built-in tiny model)."""
from __future__ import annotations

import os
import threading

import msgpack
import pytest

from ipc import framing
from ipc.schema import Request
from ipc.sockets import SocketFactory
from pipeline.api import Pipeline
from pipeline.launcher import PipelineConfig
from pipeline.models import ModelSpec

PARAMS = {"seed": 3, "ignore_eos": True, "max_new_tokens": 12, "n_timesteps": 2}


@pytest.fixture(scope="module")
def tts_from_thread():
    """A pipeline started from a thread that has ended before the first request."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("p", Pipeline(PipelineConfig(model=ModelSpec(), threads=1))).start())
    t.start()
    t.join()
    tts = box["p"]
    try:
        yield tts
    finally:
        procs = dict(tts.supervisor.processes) if tts.supervisor else {}
        tts.close()
        assert {st: p.exitcode for st, p in procs.items()} == {st: 0 for st in procs}  # left on SIGTERM, not killed


def test_pipeline_started_from_an_ended_thread_keeps_working(tts_from_thread):
    assert tts_from_thread.synthesize("Still here.", **PARAMS).size == 960 * 12


def test_duplicate_id_and_garbage_on_t3_input_do_not_kill_it(tts_from_thread):
    tts = tts_from_thread
    t3 = tts.supervisor.processes["t3"]
    before = tts.synthesize("Before.", **PARAMS)
    with SocketFactory() as sockets:
        push = sockets.socket("PUSH", tts.supervisor.endpoint("t3"))
        dup = Request(rid="dup-1", text="Twice.", params={**PARAMS, "max_new_tokens": 200})
        framing.send(push, dup)
        framing.send(push, dup)  # a second request with an id already in flight
        for i in range(2000):
            push.send_multipart([os.urandom(i % 97 + 1)] if i % 2 else
                                [msgpack.packb({"v": 1, "kind": "request", "rid": "g", "seq": "x"})])
    for _ in range(2):  # the garbage and this request reach T3 by different pipes: two rounds to be sure
        assert tts.synthesize("Before.", **PARAMS).tobytes() == before.tobytes()
    assert t3.is_alive() and t3.exitcode is None
