"""Helpers for driving chain-stage workers in-process the way the stage loop does (handle what arrived, then one unit of work)."""
from __future__ import annotations

import numpy as np
import torch

from ipc.schema import End, Mel, Message, Request, Tokens


def pump(workers, *msgs: Message) -> list[Message]:
    """Feed messages to the first worker and run the chain until nothing is left; returns what the last worker emits."""
    inboxes: list[list[Message]] = [list(msgs)] + [[] for _ in workers[1:]]
    out: list[Message] = []
    while any(inboxes) or any(w.busy() for w in workers):
        for i, w in enumerate(workers):
            sent = [m2 for m in inboxes[i] for m2 in w.handle(m)]
            inboxes[i] = []
            if w.busy():
                sent += w.work()
            (inboxes[i + 1] if i + 1 < len(workers) else out).extend(sent)
    return out


def drain(worker) -> list[Message]:
    """Run a worker's queued work to the end."""
    out: list[Message] = []
    while worker.busy():
        out += worker.work()
    return out


def token_ids(n: int, seed: int) -> np.ndarray:
    return torch.randint(0, 6561, (n,), generator=torch.Generator().manual_seed(seed)).numpy()


def token_messages(rid: str, n: int, seed: int, step: int = 1, **params) -> list[Message]:
    """A CFM stage's whole input for one request: its request, its tokens `step` at a time, its end."""
    ids = token_ids(n, seed)
    msgs: list[Message] = [Request(rid=rid, text="", params={"seed": seed, **params})]
    msgs += [Tokens(rid=rid, start=i, ids=ids[i : i + step]) for i in range(0, n, step)]
    return msgs + [End(rid=rid, totals={"tokens": n})]


def mel_messages(rid: str, mel: np.ndarray, chunks: list[int], seed: int, **params) -> list[Message]:
    """A HiFiGAN stage's whole input for one request: mel [80, F] cut into `chunks` frames, then its end."""
    msgs: list[Message] = [Request(rid=rid, text="", params={"seed": seed, **params})]
    a = 0
    for n in chunks:
        msgs.append(Mel(rid=rid, start=a, mel=np.ascontiguousarray(mel[:, a : a + n])))
        a += n
    assert a == mel.shape[1]
    return msgs + [End(rid=rid, totals={"tokens": a // 2, "frames": a})]


def interleave(*streams: list[Message]) -> list[Message]:
    """Round-robin the messages of several requests (each request's own order kept)."""
    out = []
    for k in range(max(len(s) for s in streams)):
        out += [s[k] for s in streams if k < len(s)]
    return out


def of(rid: str, kind, msgs: list[Message]) -> list[Message]:
    return [m for m in msgs if m.rid == rid and isinstance(m, kind)]
