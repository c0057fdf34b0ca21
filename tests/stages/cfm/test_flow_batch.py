"""The CFM stage's running batch: a batch of one is the solo solve bit for bit; rows batched with others (joining and
leaving at different steps, different step counts) equal their solo frames bit for bit when exact, within 1e-5
relative when padded into one call."""
from __future__ import annotations

import pytest
import torch

from stages.cfm.batch import FlowBatch, run_flow_jobs
from stages.cfm.part import load_cfm_part, new_cfm_stream
from stages.cfm.worker import FLOW_LIMITS
from stages.common.lanes import BatchLimits, bucket
from stages.common.params import parse_params
from stages.common.spec import ModelSpec
from tests.chain import token_ids
from tests.golden import rel_l2

FLOW_BOUND = 1e-5  # the bound for the flow output (relative L2 per chunk)

SCHEDULES = [  # different windows, hops, prompt windows and step counts
    {"n_timesteps": 2},
    {"n_timesteps": 3, "first_chunk_tokens": 1, "growth": 3.0, "max_hop_tokens": 9},
    {"n_timesteps": 2, "left_context_tokens": "all", "prompt_tokens": "all"},
    {"n_timesteps": 2, "first_chunk_tokens": 6, "extra_lookahead_tokens": 2, "left_context_tokens": 4},
]


@pytest.fixture(scope="module")
def part():
    return load_cfm_part(ModelSpec())


def jobs_of(part, seed: int, n: int, params: dict):
    """Every job of one request (chunks and the final step), planned as the stage plans them."""
    stream = new_cfm_stream(part, parse_params({"seed": seed, **params}))
    stream.add(token_ids(n, seed).tolist())
    jobs = list(iter(stream.plan, None))
    final = stream.plan_final()
    return jobs + ([final] if final is not None else [])


def test_a_batch_of_one_is_the_solo_solve(part):
    flow = part.flow
    for job in jobs_of(part, 3, 17, SCHEDULES[0])[:2] + jobs_of(part, 4, 9, SCHEDULES[1])[-1:]:
        mu = flow.encode(job.tokens, finalize=job.finalize)
        cond = torch.zeros_like(mu)
        cond[:, :, : job.prompt_cond.size(-1)] = job.prompt_cond
        ref = flow.solve(mu, job.spks, cond, job.noise, n_timesteps=job.n_timesteps)
        assert torch.equal(run_flow_jobs(flow, [job])[0], ref)
        alone = FlowBatch(flow, FLOW_LIMITS, exact=False)  # the padded batch holding one row: no padding
        alone.add("r", job)
        while alone.rows:
            done = alone.step()
        assert alone.length == 0 and torch.equal(done[0][2], ref)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "padded"])
@pytest.mark.parametrize("n_requests", [1, 3, 8])
def test_batched_rows_equal_their_solo_frames(part, n_requests, exact):
    requests = [jobs_of(part, 10 + i, 4 + 5 * i, SCHEDULES[i % len(SCHEDULES)]) for i in range(n_requests)]
    jobs = [(f"r{i}.{k}", job) for i, js in enumerate(requests) for k, job in enumerate(js)]
    solo = {key: run_flow_jobs(part.flow, [job])[0] for key, job in jobs}
    batch = FlowBatch(part.flow, exact=exact)  # unbounded: every job shares the batch, joining one per step
    out, waiting, lengths = {}, list(jobs), set()
    while waiting or batch.rows:
        if waiting:
            batch.add(*waiting.pop(0))
        lengths.add(batch.length)
        out.update({key: mel for key, _, mel in batch.step()})
    assert out.keys() == solo.keys()
    assert any(j.finalize for _, j in jobs)  # final steps are among them
    for key, job in jobs:
        assert out[key].shape == (1, 80, job.frames)
        if exact:
            assert torch.equal(out[key], solo[key]), key
        assert rel_l2(out[key], solo[key]) < FLOW_BOUND, key
    if n_requests > 1 and not exact:
        assert len(lengths) > 2  # rows really were padded to changing lengths


def test_dropping_a_row_mid_batch_leaves_the_others(part):
    """A cancel mid-batch: the request's row goes, the other rows finish with their solo frames."""
    jobs = [(f"r{i}", jobs_of(part, 20 + i, 12 + 3 * i, {"n_timesteps": 4})[0]) for i in range(3)]
    solo = {key: run_flow_jobs(part.flow, [job])[0] for key, job in jobs}
    batch = FlowBatch(part.flow, FLOW_LIMITS, exact=False)
    for key, job in jobs:
        batch.add(key, job)
    assert batch.step() == []
    batch.drop("r1")
    assert "r1" not in batch and len(batch) == 2
    out = {}
    while batch.rows:
        out.update({key: mel for key, _, mel in batch.step()})
    assert set(out) == {"r0", "r2"}
    for key in out:
        assert rel_l2(out[key], solo[key]) < FLOW_BOUND


def test_admission_respects_the_limits(part):
    job = jobs_of(part, 1, 30, {"n_timesteps": 2})[0]
    padded = bucket(job.frames, FLOW_LIMITS.bucket_step)
    for limits, expected in ((BatchLimits(max_jobs=3, max_units=10**6, bucket_step=16, age_limit=1), 3),
                             (BatchLimits(max_jobs=16, max_units=2 * padded + 1, bucket_step=16, age_limit=1), 2)):
        batch = FlowBatch(part.flow, limits, exact=False)
        assert batch.can_admit(10**6)  # an empty batch takes any job
        n = 0
        while batch.can_admit(job.frames):
            batch.add(n, job)
            n += 1
        assert n == expected and batch.length == padded


def test_the_batch_takes_the_flows_own_solver_step():
    """Turbo's meanflow flow (its own time grid, no CFG pair) through the same batch: alone it is its `solve`, bit
    for bit; padded with other rows, within the flow bound."""
    from stages.cfm.conds import builtin_flow_conditionals
    from stages.cfm.meanflow import build_builtin_meanflow_flow, meanflow_config
    from stages.cfm.noise import NoiseSource
    from stages.cfm.schedule import ChunkSchedule
    from stages.cfm.streaming import CFMStream

    cfg = meanflow_config("turbo-tiny")
    flow = build_builtin_meanflow_flow(cfg)
    jobs = []
    for seed, n in ((1, 9), (2, 14)):
        stream = CFMStream(flow, builtin_flow_conditionals(cfg), NoiseSource(seed), ChunkSchedule(n_timesteps=2))
        stream.add(token_ids(n, seed).tolist())
        jobs += [stream.plan(), stream.plan_final()]
    solo = []
    for job in jobs:
        mu = flow.encode(job.tokens, finalize=job.finalize)
        cond = torch.zeros_like(mu)
        cond[:, :, : job.prompt_cond.size(-1)] = job.prompt_cond
        solo.append(flow.solve(mu, job.spks, cond, job.noise, n_timesteps=2))
        assert torch.equal(run_flow_jobs(flow, [job])[0], solo[-1])
    for mel, ref in zip(run_flow_jobs(flow, jobs, exact=False), solo):
        assert rel_l2(mel, ref) < FLOW_BOUND
