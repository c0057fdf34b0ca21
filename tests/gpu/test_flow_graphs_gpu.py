"""CUDA graphs of the flow step on a GPU: every (rows, frames) bucket replays the uncaptured padded step, and a
request's chunks stay within 1e-5 (fp32) / 1e-3 (bf16) relative of their solo call, as rows join and leave."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from stages.cfm.batch import FlowBatch, run_flow_jobs
from stages.cfm.graphs import FlowGraphs, attach_flow_graphs
from stages.cfm.part import load_cfm_part, new_cfm_stream
from stages.cfm.worker import FLOW_LIMITS
from stages.common.params import parse_params
from stages.common.spec import ModelSpec
from tests.chain import token_ids
from tests.golden import rel_l2
from tests.gpu.cuda import GPU

pytestmark = GPU
BOUND = {"float32": 1e-5, "bfloat16": 1e-3}  # the audio/mel bounds per dtype


def fake_rows(graphs, b, f, gen):
    """b rows of random inputs, the longest f frames (the others shorter), at random steps of a 10-step grid."""
    rows, n = [], graphs.n_mels
    grid = torch.linspace(0, 1, 11, device="cuda", dtype=graphs.dtype)
    for i in range(b):
        frames = f if i == 0 else max(1, f - 16 * i % f)
        z = dict(device="cuda", dtype=graphs.dtype)
        rows.append(SimpleNamespace(key=i, frames=frames, x=torch.randn(1, n, frames, generator=gen, device="cuda").to(**z),
                                    mu=torch.randn(1, n, frames, generator=gen, device="cuda").to(**z),
                                    cond=torch.randn(1, n, frames, generator=gen, device="cuda").to(**z),
                                    spks=torch.randn(1, n, generator=gen, device="cuda").to(**z), grid=grid, k=i % 10))
    return rows


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_bucket_replays_the_uncaptured_step(dtype):
    part = load_cfm_part(ModelSpec(device="cuda", dtype=dtype))
    captured = FlowGraphs(part.flow, FLOW_LIMITS)
    captured.capture_all()
    eager = FlowGraphs(part.flow, FLOW_LIMITS, capture=False)
    eager.capture_all()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for b, f in captured.pairs():
        rows = fake_rows(captured, b - 1 if b > 2 else b, f, gen)  # b-1 rows (b > 2) take bucket b too: a padding row
        got, ref = captured.step(rows), eager.step(rows)
        for g, r in zip(got, ref, strict=True):
            assert rel_l2(g, r) < 1e-6 if dtype == "float32" else rel_l2(g, r) < 1e-2, (b, f)
    assert set(captured.replays) == set(captured.pairs())  # every bucket exercised


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rows_joining_and_leaving_keep_their_solo_frames(dtype):
    part = load_cfm_part(ModelSpec(device="cuda", dtype=dtype))
    jobs = []
    for i in range(6):
        stream = new_cfm_stream(part, parse_params({"seed": 40 + i, "n_timesteps": 3 + i % 2}))
        stream.add(token_ids(6 + 9 * i, i).tolist())
        jobs += [(f"r{i}.{k}", j) for k, j in enumerate(list(iter(stream.plan, None)) + [stream.plan_final()]) if j]
    solo = {key: run_flow_jobs(part.flow, [job])[0] for key, job in jobs}
    batch = FlowBatch(part.flow, FLOW_LIMITS, exact=False)
    graphs = attach_flow_graphs(batch)
    assert graphs is not None
    out, waiting = {}, list(jobs)
    while waiting or batch.rows:
        while waiting and batch.can_admit(waiting[0][1].frames) and len(batch) < 5:
            batch.add(*waiting.pop(0))
        out.update({key: mel for key, _, mel in batch.step()})
    for key, job in jobs:
        assert rel_l2(out[key].float(), solo[key].float()) < BOUND[dtype], key
    assert len({b for b, _ in graphs.replays}) >= 3
