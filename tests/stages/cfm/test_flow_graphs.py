"""The captured flow step's buckets on CPU: the padded-bucket step (what each CUDA graph records, run eagerly) keeps
every request's frames within 1e-5 of its solo call, as rows join and leave; the capture is CUDA-only."""
from __future__ import annotations

import pytest
import torch

from stages.cfm.batch import FlowBatch, run_flow_jobs
from stages.cfm.graphs import ROW_BUCKETS, FlowGraphs, attach_flow_graphs, flow_graphs_wanted, length_buckets, reachable
from stages.cfm.part import load_cfm_part, new_cfm_stream
from stages.cfm.worker import FLOW_LIMITS
from stages.common.lanes import BatchLimits
from stages.common.params import parse_params
from stages.common.spec import ModelSpec
from tests.chain import token_ids
from tests.golden import rel_l2

FLOW_BOUND = 1e-5  # the bound for the flow output (relative L2 per chunk)


@pytest.fixture(scope="module")
def part():
    return load_cfm_part(ModelSpec())


def test_length_buckets_and_reachable_pairs():
    frames = length_buckets(FLOW_LIMITS)
    assert frames[:8] == (16, 32, 48, 64, 80, 96, 112, 128) and frames[-4:] == (320, 384, 448, 512)
    assert reachable(1, 512, ROW_BUCKETS, FLOW_LIMITS)  # a row alone takes any length
    assert reachable(16, 224, ROW_BUCKETS, FLOW_LIMITS) and not reachable(16, 256, ROW_BUCKETS, FLOW_LIMITS)  # 9 x 256 > 2048
    g = FlowGraphs(load_cfm_part(ModelSpec()).flow, FLOW_LIMITS, capture=False)
    assert (16, 224) in g.pairs() and (16, 256) not in g.pairs() and (8, 384) in g.pairs()


def test_flow_graphs_are_selected_only_on_cuda():
    assert flow_graphs_wanted("cpu") is False and flow_graphs_wanted("cuda") is True
    assert flow_graphs_wanted("cuda", False) is False
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        flow_graphs_wanted("cpu", True)


def jobs_of(part, seed, n, params):
    stream = new_cfm_stream(part, parse_params({"seed": seed, **params}))
    stream.add(token_ids(n, seed).tolist())
    jobs = list(iter(stream.plan, None))
    final = stream.plan_final()
    return jobs + ([final] if final is not None else [])


def test_padded_bucket_steps_equal_solo_frames_as_rows_join_and_leave(part):
    limits = BatchLimits(max_jobs=4, max_units=4096, bucket_step=16, age_limit=20)
    schedules = [{"n_timesteps": 2}, {"n_timesteps": 3, "first_chunk_tokens": 1, "max_hop_tokens": 9},
                 {"n_timesteps": 2, "prompt_tokens": "all"}]
    jobs = [(f"r{i}.{k}", job) for i in range(3) for k, job in enumerate(jobs_of(part, 20 + i, 4 + 6 * i, schedules[i % 3]))]
    solo = {key: run_flow_jobs(part.flow, [job])[0] for key, job in jobs}
    batch = FlowBatch(part.flow, limits, exact=False)
    graphs = attach_flow_graphs(batch, capture=False)
    assert batch.graphs is graphs and graphs.row_buckets == (1, 2, 4)
    out, waiting = {}, list(jobs)
    while waiting or batch.rows:
        if waiting and batch.can_admit(waiting[0][1].frames) and len(batch) < limits.max_jobs:
            batch.add(*waiting.pop(0))
        out.update({key: mel for key, _, mel in batch.step()})
    assert out.keys() == solo.keys()
    for key, job in jobs:
        assert out[key].shape == (1, 80, job.frames)
        assert rel_l2(out[key], solo[key]) < FLOW_BOUND, key
    used = set(graphs.replays)
    assert {b for b, _ in used} == {1, 2, 4} and len({f for _, f in used}) > 2  # padded rows and frames


def test_a_shape_without_a_graph_runs_the_eager_step(part):
    job = jobs_of(part, 5, 12, {"n_timesteps": 2})[0]
    batch = FlowBatch(part.flow, FLOW_LIMITS, exact=False)
    graphs = attach_flow_graphs(batch, frames=(16,), capture=False)  # nothing long enough for this job
    batch.add("r", job)
    while batch.rows:
        done = batch.step()
    assert not graphs.replays and torch.equal(done[0][2], run_flow_jobs(part.flow, [job])[0])


def test_cpu_worker_keeps_the_eager_step():
    from stages.cfm.worker import make_worker
    from stages.common.process import StageArgs

    args = StageArgs(stage="cfm", input_endpoint="", output_endpoint="", control_endpoint="", model={}, device="cpu",
                     threads=1, options={"cuda_graphs": True})  # a CUDA-only option means nothing on a CPU
    assert make_worker(args).batch.graphs is None
