"""CUDA IPC hand-off on a CPU machine: the optional `cuda` field of a mel message round-trips the wire and is
validated; a CPU tensor is refused; a CPU vocoder that receives a handle fails that request only; the flags
--cuda-graphs / --cuda-ipc are refused where they cannot apply, naming the flag."""
from __future__ import annotations

import click
import numpy as np
import pytest
import torch

from ipc import cuda_ipc, framing
from ipc.schema import Mel, ProtocolError
from pipeline.cli_common import gpu_stage_options

HANDLE = {"device": 0, "handle": b"\x01" * 64, "storage_bytes": 80 * 6 * 4, "storage_offset": 0, "ref_handle": b"rc",
          "ref_offset": 3, "event": b"\x02" * 64, "event_sync": True, "dtype": "float32", "shape": [80, 6],
          "stride": [6, 1], "offset": 0}


def test_a_mel_with_a_handle_round_trips_the_wire():
    msg = Mel(rid="r", seq=2, start=10, mel=np.zeros((80, 0), np.float32), cuda=HANDLE)
    back = framing.decode(framing.encode(msg))
    assert back.cuda == HANDLE and back.mel.shape == (80, 0) and back.start == 10
    cuda_ipc.check(back.cuda)
    assert cuda_ipc.shape_of(back.cuda) == (80, 6)
    plain = framing.decode(framing.encode(Mel(rid="r", start=0, mel=np.ones((80, 3), np.float32))))
    assert plain.cuda is None and plain.mel.shape == (80, 3)  # the byte frames, unchanged


def test_bad_handles_are_refused_naming_the_field():
    with pytest.raises(ProtocolError, match="'cuda'"):
        framing.encode(Mel(rid="r", start=0, mel=np.zeros((80, 0), np.float32), cuda=[1, 2]))
    with pytest.raises(ValueError, match="exactly the fields"):
        cuda_ipc.check({"handle": b""})
    with pytest.raises(ValueError, match="'shape'"):
        cuda_ipc.check({**HANDLE, "shape": [80, -1]})
    with pytest.raises(ValueError, match="dtype 'int8'"):
        cuda_ipc.check({**HANDLE, "dtype": "int8"})


def test_only_cuda_tensors_are_shared():
    with pytest.raises(ValueError, match="only a CUDA tensor"):
        cuda_ipc.share(torch.zeros(80, 4))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_cpu_vocoder_fails_only_the_request_that_sent_a_handle():
    from ipc.schema import Error, Request
    from stages.common.spec import ModelSpec
    from stages.hifigan.part import load_hifigan_part
    from stages.hifigan.worker import HiFiGANWorker

    w = HiFiGANWorker(load_hifigan_part(ModelSpec()))
    for rid in ("a", "b"):
        w.handle(Request(rid=rid, seq=0, text="", params={"seed": 1}))
    out = w.handle(Mel(rid="a", seq=1, start=0, mel=np.zeros((80, 0), np.float32), cuda=HANDLE))
    assert len(out) == 1 and isinstance(out[0], Error) and "no CUDA device" in out[0].message
    assert "a" not in w.table and "b" in w.table
    assert w.handle(Mel(rid="b", seq=1, start=0, mel=np.full((80, 8), -5.0, np.float32))) == []  # b carries on
    assert w.handle(Mel(rid="zz", seq=1, start=0, mel=np.zeros((80, 0), np.float32), cuda=HANDLE)) == []  # unknown: dropped


def test_gpu_flags_are_refused_where_they_cannot_apply():
    assert gpu_stage_options(None, "cpu", {}) == {}
    assert gpu_stage_options(False, "cpu", {}) == {"cuda_graphs": False}
    assert gpu_stage_options(True, "cpu", {"t3": "cuda"}) == {"cuda_graphs": True}
    assert gpu_stage_options(None, "cuda", {}, cuda_ipc=True) == {"cuda_ipc": True}
    with pytest.raises(click.BadParameter, match="CUDA stage"):
        gpu_stage_options(True, "cpu", {})
    with pytest.raises(click.BadParameter, match="one CUDA device"):
        gpu_stage_options(None, "cuda:0", {"hifigan": "cuda:1"}, cuda_ipc=True)
    with pytest.raises(click.BadParameter, match="one CUDA device"):
        gpu_stage_options(None, "cpu", {}, cuda_ipc=True)
