"""CUDA IPC hand-off on a GPU: a mel chunk shared by another process arrives equal, bit for bit, to the byte-frame
path; the producer's block is released once the consumer has copied it."""
from __future__ import annotations

import numpy as np
import torch
import torch.multiprocessing as mp

from ipc import cuda_ipc, framing
from ipc.schema import Mel
from tests.gpu.cuda import GPU

pytestmark = GPU


def producer(conn) -> None:  # a spawned process: makes chunks on the GPU, sends both encodings, waits for the ack
    gen = torch.Generator(device="cuda").manual_seed(3)
    for i in range(3):
        mel = torch.randn(80, 17 + i, generator=gen, device="cuda")
        handle = framing.encode(Mel(rid="r", seq=i, start=0, mel=np.zeros((80, 0), np.float32), cuda=cuda_ipc.share(mel)))
        frames = framing.encode(Mel(rid="r", seq=i, start=0, mel=mel))  # the byte frames (device -> host copy)
        conn.send(([bytes(f) for f in handle], [bytes(f) for f in frames]))
        del mel  # the export keeps the block alive until the consumer releases it
        assert conn.recv() == "ok"
    conn.send("done")


def test_ipc_handoff_equals_byte_frames():
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=producer, args=(theirs,), daemon=True)
    p.start()
    try:
        for _ in range(3):
            handle, frames = ours.recv()
            via_ipc = framing.decode(handle)
            via_bytes = framing.decode(frames)
            got = cuda_ipc.receive(via_ipc.cuda, "cuda")
            assert got.device.type == "cuda" and tuple(got.shape) == via_bytes.mel.shape
            assert torch.equal(got.cpu(), torch.from_numpy(via_bytes.mel.copy()))
            ours.send("ok")
        assert ours.recv() == "done"
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0
