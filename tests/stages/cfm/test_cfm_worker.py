"""The CFM worker batches requests' chunk jobs: every request's mel chunks equal its solo chunks (same cuts; frames bit
for bit when exact, the CPU default, within 1e-5 relative when padded), exact frame counts, nothing left afterwards;
`handle` never runs the model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ipc.schema import End, Mel
from stages.cfm.part import load_cfm_part, new_cfm_stream
from stages.cfm.worker import CFMWorker
from stages.common.params import parse_params
from stages.common.spec import ModelSpec
from tests.chain import drain, interleave, of, token_ids, token_messages
from tests.golden import rel_l2

from .test_flow_batch import FLOW_BOUND, SCHEDULES


@pytest.fixture(scope="module")
def part():
    return load_cfm_part(ModelSpec())


def solo_chunks(part, seed, n, params):
    stream = new_cfm_stream(part, parse_params({"seed": seed, **params}))
    return [c for t in token_ids(n, seed).tolist() for c in stream.push([t])] + stream.finish()


@pytest.mark.parametrize("exact", [None, False], ids=["default-exact", "padded"])
@pytest.mark.parametrize("n_requests", [1, 3, 8])
def test_batched_requests_equal_each_alone(part, n_requests, exact):
    worker = CFMWorker(part, exact=exact)
    assert worker.batch.exact == (exact is None)  # the CPU default is exact
    reqs = [(f"q{i}", 30 + i, 3 + 3 * i, SCHEDULES[i % len(SCHEDULES)]) for i in range(n_requests)]
    msgs = interleave(*[token_messages(rid, n, seed, step=1 + i % 3, **params) for i, (rid, seed, n, params) in enumerate(reqs)])
    out = [m2 for m in msgs for m2 in worker.handle(m)]
    assert not [m for m in out if isinstance(m, Mel)]  # handle() only queued the jobs
    assert worker.busy()
    out += drain(worker)
    for rid, seed, n, params in reqs:
        ref = solo_chunks(worker.part, seed, n, params)
        got = of(rid, Mel, out)
        assert [m.start for m in got] == [c.start for c in ref]
        for m, c in zip(got, ref):
            assert m.mel.shape == tuple(c.mel.shape)
            if n_requests == 1 or exact is None:
                assert np.array_equal(m.mel, c.mel.numpy())  # a batch of one, or exact: the solo call
            assert rel_l2(torch.from_numpy(m.mel), c.mel) < FLOW_BOUND
        (end,) = of(rid, End, out)
        assert end.totals == {"tokens": n, "frames": 2 * n} == {"tokens": n, "frames": sum(m.mel.shape[1] for m in got)}
    assert len(worker.table) == 0 and not worker.batch and not worker.busy()
