"""Wire self-check: round-trips every message kind over real sockets and times encode+send+receive+decode.

Run by `tts-pipeline selfcheck` and by benchmarks/bench_wire.py.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from ipc import framing
from ipc.endpoints import Endpoints
from ipc.schema import (KINDS, Accepted, Audio, Cancel, End, Error, Info, Mel, Message, Ready, Request, Tokens,
                        Welcome)
from ipc.sockets import SocketFactory

RECV_TIMEOUT_MS = 5000  # a message not back within 5 s means the wire is broken


def example_messages() -> list[Message]:
    """One message of every kind, as the pipeline would send them."""
    return [
        Request(rid="selfcheck", seq=0, text="Hello.", params={"seed": 0}),
        Tokens(rid="selfcheck", seq=1, start=0, ids=np.arange(4, dtype=np.int64)),
        Mel(rid="selfcheck", seq=2, start=0, mel=np.zeros((80, 8), np.float32)),
        Audio(rid="selfcheck", seq=3, start=0, sample_rate=24000, pcm=np.zeros(3840, np.float32)),
        End(rid="selfcheck", seq=4, totals={"samples": 3840}, reason="stop"),
        Error(rid="selfcheck", seq=5, stage="selfcheck", message="example"),
        Cancel(rid="selfcheck", seq=6),
        Ready(rid="selfcheck", seq=7, stage="selfcheck", pid=0, info={}),
        Accepted(rid="selfcheck", seq=8, params={"seed": 0}),
        Welcome(rid="selfcheck", seq=0),
        Info(rid="selfcheck", seq=0, model="chatterbox", schedule={"n_timesteps": 10, "prompt_tokens": "all"}),
    ]


def round_trip_all(transport: str) -> int:
    """Send every kind through PUSH/PULL on `transport`; returns how many came back intact."""
    msgs = example_messages()
    assert {type(m).KIND for m in msgs} == set(KINDS), "example_messages must cover every kind"
    with SocketFactory(Endpoints(transport)) as f:
        pull = f.socket("PULL", f.endpoint("selfcheck"), RCVTIMEO=RECV_TIMEOUT_MS)
        push = f.socket("PUSH", f.bound_address(pull))
        for m in msgs:
            framing.send(push, m)
        ok = 0
        for m in msgs:
            got = framing.recv(pull)
            ok += type(got) is type(m) and got.seq == m.seq
        return ok


def time_round_trips(payload_bytes: int, n: int, transport: str = "ipc") -> dict[str, float]:
    """Per-message seconds for encode+send+receive+decode of `n` messages, one at a time.

    payload_bytes 0 sends a header-only Cancel; otherwise an Audio message whose float32
    PCM frame has that many bytes. One process, one thread: the time includes the hop
    through ZeroMQ's I/O thread and the socket, which is what a stage pays per message.
    """
    if payload_bytes:
        msg: Message = Audio(rid="bench", seq=0, start=0, sample_rate=24000, pcm=np.ones(payload_bytes // 4, np.float32))
    else:
        msg = Cancel(rid="bench", seq=0)
    times = []
    with SocketFactory(Endpoints(transport)) as f:
        pull = f.socket("PULL", f.endpoint("bench"), RCVTIMEO=RECV_TIMEOUT_MS)
        push = f.socket("PUSH", f.bound_address(pull))
        for i in range(n + max(10, n // 10)):  # the first messages warm up the connection
            t0 = time.perf_counter()
            framing.send(push, msg)
            framing.recv(pull)
            times.append(time.perf_counter() - t0)
    times = sorted(times[max(10, n // 10):])
    return {
        "n": n,
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "p90_s": times[int(0.9 * (len(times) - 1))],
    }
