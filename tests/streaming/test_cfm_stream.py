"""CFM streaming invariants: exact frame counts, final and causal chunks, exactness with full context, no lost tail."""
import pytest
import torch

from stages.cfm.part import cfm_noise
from stages.common.params import RequestParams, parse_params
from stages.cfm.schedule import ChunkSchedule
from stages.cfm.streaming import CFMStream
from tests.golden import rel_l2, tolerance

from .conftest import random_tokens


def run_cfm(engine, tokens, schedule, seed=1, step=1):
    s = CFMStream(engine.cfm.flow, engine.cfm.conds, cfm_noise(seed), schedule)
    during = []
    for i in range(0, len(tokens), step):
        during += s.push(tokens[i : i + step])
    final = s.finish()
    return s, during, final


def offline_mel(engine, tokens, seed=1, n_timesteps=10):
    speech = torch.tensor([tokens], dtype=torch.long)
    return engine.cfm.flow.infer(speech, engine.cfm.conds, cfm_noise(seed), n_timesteps=n_timesteps)[0]


def test_end_with_no_new_tokens_flushes_everything(engine):
    sched = ChunkSchedule(first_chunk_tokens=4, growth=1.0, n_timesteps=2)
    tokens = random_tokens(11)  # chunks at 4 (needs 7) and 8 (needs 11): all pushed chunks done before finish
    s, during, final = run_cfm(engine, tokens, sched)
    assert sum(c.mel.shape[1] for c in during) == 16
    assert len(final) == 1 and final[0].start == 16 and final[0].mel.shape[1] == 6  # the 3 lookahead tokens
    for n in (0, 1, 2, 3):  # fewer tokens than the lookahead: everything comes from the final step
        s, during, final = run_cfm(engine, random_tokens(n), sched)
        assert during == [] and sum(c.mel.shape[1] for c in final) == 2 * n


def test_invalid_ids_never_shift_frames(engine):
    sched = ChunkSchedule(first_chunk_tokens=2, n_timesteps=2)
    tokens = random_tokens(20)
    noisy = []
    for i, t in enumerate(tokens):
        noisy.append(t)
        if i % 3 == 0:
            noisy += [6561, 6562, 8000]
    a = run_cfm(engine, tokens, sched)
    b = run_cfm(engine, noisy, sched)
    assert b[0].dropped == 21
    for x, y in zip(a[1] + a[2], b[1] + b[2]):
        assert x.start == y.start and torch.equal(x.mel, y.mel)


def test_chunks_are_causal_and_final(engine):
    """Chunks emitted before the end depend only on the tokens received so far."""
    sched = ChunkSchedule(first_chunk_tokens=2, growth=2.0, max_hop_tokens=8, n_timesteps=2)
    tokens = random_tokens(40)
    _, full_during, _ = run_cfm(engine, tokens, sched)
    for m in (7, 18, 29):
        _, during, final = run_cfm(engine, tokens[:m], sched)
        assert len(during) <= len(full_during)
        for x, y in zip(during, full_during):
            assert x.start == y.start and torch.equal(x.mel, y.mel)
        # the same run fed in bursts emits the same chunks (timing and batching do not matter)
        _, bursty, _ = run_cfm(engine, tokens[:m], sched, step=5)
        assert [c.start for c in bursty] == [c.start for c in during]
        for x, y in zip(bursty, during):
            assert torch.equal(x.mel, y.mel)


def test_full_context_streaming_equals_offline(engine):
    """With left context 'all' and a lookahead covering the utterance, the plumbing is exact."""
    tokens = random_tokens(30)
    sched = ChunkSchedule(first_chunk_tokens=4, left_context_tokens="all", extra_lookahead_tokens=40, prompt_tokens="all")
    _, during, final = run_cfm(engine, tokens, sched)
    mel = torch.cat([c.mel for c in during + final], dim=1)
    ref = offline_mel(engine, tokens)
    assert rel_l2(mel, ref) < tolerance("cfm", "mel_finalize_true")


def test_final_step_of_full_context_stream_matches_offline_tail(engine):
    """Earlier chunks saw less context, but the final step sees everything and the same noise positions."""
    tokens = random_tokens(24)
    sched = ChunkSchedule(first_chunk_tokens=4, growth=1.0, left_context_tokens="all", prompt_tokens="all")
    _, during, final = run_cfm(engine, tokens, sched)
    assert during, "the schedule should emit chunks before the end"
    ref = offline_mel(engine, tokens)
    tail = final[0]
    assert rel_l2(tail.mel, ref[:, tail.start :]) < tolerance("cfm", "mel_finalize_true")


def test_prompt_window_keeps_noise_positions(engine):
    """With a prompt window the prompt frames keep their absolute noise positions."""
    tokens = random_tokens(12)
    p = engine.cfm.conds.n_prompt_tokens
    full = ChunkSchedule(first_chunk_tokens=4, prompt_tokens="all", extra_lookahead_tokens=40, left_context_tokens="all")
    same = ChunkSchedule(first_chunk_tokens=4, prompt_tokens=p, extra_lookahead_tokens=40, left_context_tokens="all")
    a = torch.cat([c.mel for c in sum(run_cfm(engine, tokens, full)[1:], [])], dim=1)
    b = torch.cat([c.mel for c in sum(run_cfm(engine, tokens, same)[1:], [])], dim=1)
    assert torch.equal(a, b)
    short = ChunkSchedule(first_chunk_tokens=4, prompt_tokens=2)
    c = torch.cat([x.mel for x in sum(run_cfm(engine, tokens, short)[1:], [])], dim=1)
    assert c.shape == a.shape


def test_request_parameters_are_validated():
    with pytest.raises(ValueError, match="first_chunk_tokens"):
        parse_params({"first_chunk_tokens": 0})
    with pytest.raises(ValueError, match="left_context_tokens"):
        parse_params({"left_context_tokens": -1})
    with pytest.raises(ValueError, match="unknown parameter"):
        parse_params({"temprature": 0.5})
    with pytest.raises(ValueError, match="temperature"):
        parse_params({"temperature": 0})
    assert isinstance(parse_params({"seed": 5}), RequestParams)
