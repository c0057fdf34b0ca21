"""No message kills the CFM or HiFiGAN stage, and a cancel cuts work: cancels and errors free a request at once (its
queued jobs and batch rows dropped) and travel on even for unknown ids; a duplicate id is that request's error; data
of unknown requests is dropped with a rate-limited log line; 2,000 garbage messages on each input socket leave every
stage running."""
from __future__ import annotations

import logging

import msgpack
import numpy as np
import pytest
import torch
import zmq

from ipc import framing
from ipc.schema import Accepted, Audio, Cancel, End, Error, Mel, Ready, Request, Tokens, Welcome
from ipc.sockets import SocketFactory
from pipeline.coordinator import RequestError
from stages.cfm.part import load_cfm_part, new_cfm_stream
from stages.cfm.worker import CFMWorker
from stages.common.chain import stage_capacity
from stages.common.params import parse_params
from stages.common.spec import ModelSpec
from stages.hifigan.part import load_hifigan_part
from stages.hifigan.worker import HiFiGANWorker
from tests.chain import drain, interleave, mel_messages, of, token_ids, token_messages
from tests.golden import rel_l2

from .conftest import FAST

GARBAGE = 2000  # messages pushed to each stage's input socket
SEND_TIMEOUT_MS = 10_000  # a stage that stopped reading fails the test instead of hanging it


@pytest.fixture(scope="module")
def cfm():
    return CFMWorker(load_cfm_part(ModelSpec()))


@pytest.fixture(scope="module")
def voc():
    return HiFiGANWorker(load_hifigan_part(ModelSpec()))


def test_cancel_mid_batch_frees_the_request_and_leaves_the_others(cfm):
    reqs = [("a", 1, 14), ("b", 2, 20), ("c", 3, 17)]
    msgs = interleave(*[token_messages(rid, n, seed, step=n, n_timesteps=3) for rid, seed, n in reqs])
    out = [m2 for m in msgs for m2 in cfm.handle(m)]
    out += cfm.work()  # the three first chunks are rows of the running batch, one step in
    assert "b" in cfm.batch and len(cfm.batch) == 3
    cancelled = cfm.handle(Cancel(rid="b"))
    assert [type(m) for m in cancelled] == [Cancel] and cancelled[0].rid == "b"
    assert "b" not in cfm.table and "b" not in cfm.batch  # freed at once, its queued jobs with it
    after = drain(cfm)
    assert not of("b", Mel, out + after) and not of("b", End, after)
    for rid, seed, n in reqs:
        if rid == "b":
            continue
        stream = new_cfm_stream(cfm.part, parse_params({"seed": seed, "n_timesteps": 3}))
        ref = stream.push(token_ids(n, seed).tolist()) + stream.finish()
        got = of(rid, Mel, out + after)
        assert [m.start for m in got] == [c.start for c in ref]
        assert all(rel_l2(torch.from_numpy(m.mel), c.mel) < 1e-5 for m, c in zip(got, ref))
    assert len(cfm.table) == 0 and not cfm.busy()


def test_cancel_and_error_drop_queued_vocoder_work(voc):
    mel = np.full((80, 120), -4.0, np.float32)
    msgs = interleave(mel_messages("x", mel, [30] * 4, 1), mel_messages("y", mel, [30] * 4, 2), mel_messages("z", mel, [60] * 2, 3))
    out = [m2 for m in msgs for m2 in voc.handle(m)]
    assert len(voc.table.get("x").lane.jobs) > 1  # x's chunks are queued, none decoded yet
    assert [type(m) for m in voc.handle(Cancel(rid="x"))] == [Cancel]
    err = voc.handle(Error(rid="y", stage="cfm", message="boom"))
    assert [(type(m), m.stage) for m in err] == [(Error, "cfm")]
    assert "x" not in voc.table and "y" not in voc.table
    out += drain(voc)
    assert not of("x", Audio, out) and not of("y", Audio, out)
    assert sum(m.pcm.size for m in of("z", Audio, out)) == 480 * 120 and of("z", End, out)


@pytest.mark.parametrize("name", ["cfm", "voc"])
def test_cancels_and_errors_of_unknown_ids_travel_on(name, cfm, voc):
    worker = {"cfm": cfm, "voc": voc}[name]
    for msg in (Cancel(rid="nobody"), Error(rid="nobody", stage="t3", message="failed upstream")):
        out = worker.handle(msg)
        assert len(out) == 1 and type(out[0]) is type(msg) and out[0].rid == "nobody"
    assert "nobody" not in worker.table


@pytest.mark.parametrize("name", ["cfm", "voc"])
def test_a_duplicate_id_is_that_requests_error(name, cfm, voc):
    worker = {"cfm": cfm, "voc": voc}[name]
    worker.handle(Request(rid="twice", text="", params={"seed": 1}))
    out = worker.handle(Request(rid="twice", text="", params={"seed": 1}))
    assert len(out) == 1 and isinstance(out[0], Error) and "already in flight" in out[0].message
    assert "twice" not in worker.table  # the request with that id failed: nothing of it is left
    if name == "cfm":
        good = drain_all(worker, token_messages("good", 9, 4, step=3, n_timesteps=1))
        assert of("good", End, good)[0].totals == {"tokens": 9, "frames": 18}
    else:
        good = drain_all(worker, mel_messages("good", np.full((80, 30), -4.0, np.float32), [10, 20], 4))
        assert of("good", End, good)[0].totals["samples"] == 480 * 30


def drain_all(worker, msgs):
    return [m2 for m in msgs for m2 in worker.handle(m)] + drain(worker)


def test_data_of_unknown_requests_is_dropped_with_few_log_lines(cfm, caplog):
    with caplog.at_level(logging.WARNING, logger="tts.stage"):
        for i in range(500):
            assert cfm.handle(Tokens(rid=f"ghost{i}", start=0, ids=np.arange(3, dtype=np.int64))) == []
            assert cfm.handle(End(rid=f"ghost{i}", totals={"tokens": 3})) == []
    lines = [r for r in caplog.records if "unknown request" in r.getMessage()]
    assert 1 <= len(lines) <= 3  # rate-limited, not one line per message
    assert len(cfm.table) == 0


def test_the_table_bound_comes_from_the_admission_limits():
    assert stage_capacity({"max_inflight": 4, "max_queue": 16}) == 20
    worker = CFMWorker(load_cfm_part(ModelSpec()), capacity=stage_capacity({"max_inflight": 2, "max_queue": 1}))
    for i in range(3):
        assert isinstance(worker.handle(Request(rid=f"r{i}", text="", params={"seed": i}))[0], Request)
    (err,) = worker.handle(Request(rid="r3", text="", params={"seed": 3}))
    assert isinstance(err, Error) and "3 requests already in flight" in err.message
    worker.handle(Cancel(rid="r0"))
    assert isinstance(worker.handle(Request(rid="r3", text="", params={"seed": 3}))[0], Request)
    worker.close()
    assert len(worker.table) == 0


def garbage(n: int, seed: int) -> list[list[bytes]]:
    """Undecodable, malformed and well-formed-but-foreign messages, none of them about a running request."""
    rng = np.random.default_rng(seed)
    good = framing.encode(Tokens(rid="g", start=0, ids=np.arange(4, dtype=np.int64)))
    header = msgpack.unpackb(bytes(good[0]))
    foreign = [
        lambda k: framing.encode(Tokens(rid=f"ghost{k}", start=int(rng.integers(0, 99)), ids=rng.integers(-9, 99999, 5))),
        lambda k: framing.encode(Mel(rid=f"ghost{k}", start=0, mel=rng.standard_normal((80, 3)).astype(np.float32))),
        lambda k: framing.encode(End(rid=f"ghost{k}", totals={"tokens": 3, "frames": 6})),
        lambda k: framing.encode(Audio(rid=f"ghost{k}", start=0, sample_rate=24000, pcm=np.zeros(8, np.float32))),
        lambda k: framing.encode(Cancel(rid=f"ghost{k}")),
        lambda k: framing.encode(Error(rid=f"ghost{k}", stage="x", message="y")),
        lambda k: framing.encode(Ready(rid="cfm", stage="cfm", pid=1)),
        lambda k: framing.encode(Welcome(rid="*")),
        lambda k: framing.encode(Accepted(rid=f"ghost{k}", params={"seed": 1})),
    ]
    malformed = [
        lambda k: [rng.bytes(int(rng.integers(0, 64))) for _ in range(int(rng.integers(1, 4)))],
        lambda k: [bytes(good[0])[: int(rng.integers(0, len(bytes(good[0]))))], bytes(good[1])],
        lambda k: [msgpack.packb({**header, "start": "x"}), bytes(good[1])],
        lambda k: [msgpack.packb({**header, "kind": "bogus"}), bytes(good[1])],
        lambda k: [msgpack.packb({**header, "tensors": [{"name": "ids", "dtype": "int64", "shape": [10**9]}]}), bytes(good[1])],
        lambda k: [bytes(good[0])],
    ]
    makers = foreign + malformed
    return [[bytes(f) for f in makers[int(rng.integers(len(makers)))](k)] for k in range(n)]


def test_garbage_and_a_duplicate_id_on_the_stage_sockets_kill_no_stage(tts):
    """After the garbage, a duplicate `request` of a running request on the same socket: when that request's error
    arrives, the stage has read every garbage message before it. Then every stage is alive and serves a new request."""
    sup = tts.supervisor
    with SocketFactory() as sockets:
        for stage, seed in (("cfm", 1), ("hifigan", 2)):
            victim = tts.submit("Keep going.", seed=seed, ignore_eos=True, max_new_tokens=1400, **FAST)
            chunks = victim.chunks()
            next(chunks)  # the victim is running in every stage
            push = sockets.socket("PUSH", sup.endpoint(stage), bind=False)
            push.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
            for frames in garbage(GARBAGE, seed):
                push.send_multipart(frames)
            framing.send(push, Request(rid=victim.rid, text="", params={"seed": 1}))
            with pytest.raises(RequestError, match=f"{stage}.*already in flight"):
                for _ in chunks:
                    pass
            assert all(p.is_alive() for p in sup.processes.values()), f"a stage died of garbage sent to {stage}"
    pcm = tts.synthesize("Still standing.", seed=5, ignore_eos=True, max_new_tokens=12, **FAST)
    assert pcm.size == 960 * 12
    assert all(p.is_alive() for p in sup.processes.values())


def test_an_error_echoing_a_huge_value_still_fits_the_wire(cfm):
    (err,) = cfm.handle(Request(rid="huge", text="", params={"seed": 1, "first_chunk_tokens": "x" * 50_000}))
    assert isinstance(err, Error) and "first_chunk_tokens" in err.message and len(err.message) <= 2000
    framing.decode(framing.encode(err))  # encodable: the stage's send cannot fail on it


def test_exact_batching_is_the_cpu_default_and_an_option():
    from stages.common.chain import exact_batching

    assert exact_batching({}, "cpu") and not exact_batching({}, "cuda:0")
    assert not exact_batching({"exact_batching": False}, "cpu") and exact_batching({"exact_batching": True}, "cuda")
