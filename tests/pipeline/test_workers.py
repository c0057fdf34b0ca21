"""The stage workers driven in-process (no sockets): the chain's messages, errors and cancels, and freed state."""
import numpy as np
import pytest

from ipc.schema import Audio, Cancel, End, Error, Mel, Request, Tokens
from pipeline.models import ModelSpec
from stages.cfm.part import load_cfm_part
from stages.hifigan.part import load_hifigan_part
from stages.t3.part import load_t3_part
from stages.cfm.worker import CFMWorker
from stages.hifigan.worker import HiFiGANWorker
from stages.t3.worker import T3Worker
from tests.chain import pump


@pytest.fixture(scope="module")
def chain():
    spec = ModelSpec()
    return T3Worker(load_t3_part(spec, max_slots=2), max_inflight=2, max_queue=2), CFMWorker(load_cfm_part(spec)), HiFiGANWorker(load_hifigan_part(spec))


def run(chain, *msgs):
    """Push messages into T3 and let everything flow to the end of the chain; returns what HiFiGAN emits."""
    return pump(chain, *msgs)


def test_a_request_flows_through_and_is_freed(chain):
    out = run(chain, Request(rid="a", text="Hello.", params={"seed": 1, "ignore_eos": True, "max_new_tokens": 9, "n_timesteps": 2}))
    audio = [m for m in out if isinstance(m, Audio)]
    assert sum(m.pcm.size for m in audio) == 960 * 9
    assert isinstance(out[-1], End) and out[-1].totals == {"tokens": 9, "frames": 18, "samples": 960 * 9}
    assert [m.seq for m in out] == list(range(len(out)))  # HiFiGAN numbers its messages per request from 0
    assert all(len(w.table) == 0 for w in chain)


def test_bad_request_becomes_an_error_down_the_chain(chain):
    out = run(chain, Request(rid="b", text="   ", params={"seed": 1}))
    assert len(out) == 1 and isinstance(out[0], Error) and out[0].stage == "t3" and "empty" in out[0].message
    assert all(len(w.table) == 0 for w in chain)


def test_out_of_order_data_fails_that_request_only(chain):
    _, cfm, voc = chain
    cfm.handle(Request(rid="c", text="", params={"seed": 1}))
    err = cfm.handle(Tokens(rid="c", start=5, ids=np.array([1], np.int64)))
    assert isinstance(err[0], Error) and "out of order" in err[0].message and "c" not in cfm.table
    voc.handle(Request(rid="d", text="", params={"seed": 1}))
    err = voc.handle(End(rid="d", totals={"tokens": 3, "frames": 6}))
    assert isinstance(err[0], Error) and "frames" in err[0].message and "d" not in voc.table


def test_cancel_frees_every_stage(chain):
    t3, cfm, voc = chain
    assert t3.handle(Request(rid="e", text="Hi there.", params={"seed": 1, "n_timesteps": 2})) == []  # queued
    for m in t3.work():  # admitted: the request is forwarded with its first token
        for m2 in cfm.handle(m):
            voc.handle(m2)
    assert "e" in t3.table and "e" in cfm.table and "e" in voc.table
    out = [m3 for m in t3.handle(Cancel(rid="e")) for m2 in cfm.handle(m) for m3 in voc.handle(m2)]
    assert len(out) == 1 and isinstance(out[0], Cancel)
    assert all("e" not in w.table for w in chain) and not t3.busy()


def test_mel_chunks_are_contiguous(chain):
    _, cfm, _ = chain
    msgs = pump([cfm], Request(rid="f", text="", params={"seed": 3, "first_chunk_tokens": 1, "n_timesteps": 1}),
                Tokens(rid="f", start=0, ids=np.arange(20, dtype=np.int64)), End(rid="f", totals={"tokens": 20}))
    mels = [m for m in msgs if isinstance(m, Mel)]
    assert [m.start for m in mels] == list(np.cumsum([0] + [m.mel.shape[1] for m in mels[:-1]]))
    assert msgs[-1].totals == {"tokens": 20, "frames": 40}
