"""Streaming T3 -> CFM -> HiFiGAN in one process: exact sample counts, inaudible seams, per-request isolation."""
import pytest
import torch

from stages.common.params import parse_params
from pipeline.sequential import offline_synthesize, stream_tokens

from .conftest import random_tokens

FAST = {"n_timesteps": 2}  # sample counts and plumbing do not depend on the number of solver steps


def stream(engine, tokens, **params):
    req = parse_params({"seed": 7, **FAST, **params})
    return list(stream_tokens(engine, req, tokens))


@pytest.fixture(scope="module")
def offline_counts(engine):
    """Offline (whole-utterance) sample counts for 0..60 tokens."""
    return {n: offline_synthesize(engine, random_tokens(n, n), 7, n_timesteps=1).numel() for n in range(61)}


@pytest.mark.parametrize("first", [1, 2, 4, 10, 25])
@pytest.mark.parametrize("growth", [1.0, 2.0])
def test_streamed_samples_equal_offline_samples(engine, offline_counts, first, growth):
    for n in range(61):
        chunks = stream(engine, random_tokens(n, n), first_chunk_tokens=first, growth=growth,
                        max_hop_tokens=max(first, 25), n_timesteps=1)
        assert [c.start for c in chunks] == sorted(c.start for c in chunks)
        assert all(a.start + a.pcm.numel() == b.start for a, b in zip(chunks, chunks[1:])), "gap or overlap"
        assert sum(c.pcm.numel() for c in chunks) == offline_counts[n] == 960 * n, f"n={n}"


def test_empty_stream_is_well_terminated(engine):
    assert stream(engine, []) == []
    assert offline_synthesize(engine, [], 7).numel() == 0


def test_invalid_tokens_do_not_change_audio(engine):
    tokens = random_tokens(20, 3)
    noisy = [t for tok in tokens for t in (tok, 6562)]
    a = torch.cat([c.pcm for c in stream(engine, tokens)])
    b = torch.cat([c.pcm for c in stream(engine, noisy)])
    assert torch.equal(a, b)


def test_seams_are_no_louder_than_the_audio(engine):
    """At chunk joins the largest sample-to-sample jump is no larger than inside chunks."""
    report = []
    for seed in (1, 2, 3, 4):
        chunks = list(stream_tokens(engine, parse_params({"seed": seed, **FAST, "first_chunk_tokens": 2}), random_tokens(40, seed)))
        assert len(chunks) >= 3
        y = torch.cat([c.pcm for c in chunks])
        jumps = (y[1:] - y[:-1]).abs()
        joins = torch.tensor([c.start - 1 for c in chunks[1:]])
        at_joins = float(jumps[joins].max())
        inside = jumps.clone()
        inside[joins] = 0
        report.append((seed, at_joins, float(inside.max())))
        assert at_joins <= float(inside.max()), report
    print("seam jumps (seed, at joins, inside chunks):", report)


def test_interleaved_requests_equal_each_alone(engine):
    a_tokens, b_tokens = random_tokens(25, 1), random_tokens(18, 2)
    ra, rb = parse_params({"seed": 1, **FAST}), parse_params({"seed": 2, **FAST, "first_chunk_tokens": 1})
    alone_a = torch.cat([c.pcm for c in stream_tokens(engine, ra, a_tokens)])
    alone_b = torch.cat([c.pcm for c in stream_tokens(engine, rb, b_tokens)])
    ga, gb = stream_tokens(engine, ra, iter(a_tokens)), stream_tokens(engine, rb, iter(b_tokens))
    out_a, out_b, live = [], [], {"a": True, "b": True}
    while any(live.values()):  # alternate one chunk at a time between the two requests
        for name, gen, out in (("a", ga, out_a), ("b", gb, out_b)):
            if live[name]:
                try:
                    out.append(next(gen).pcm)
                except StopIteration:
                    live[name] = False
    assert torch.equal(torch.cat(out_a), alone_a) and torch.equal(torch.cat(out_b), alone_b)


def test_engine_stream_from_text(engine):
    chunks = list(engine.stream("Hello world.", {"seed": 5, "ignore_eos": True, "max_new_tokens": 12, **FAST}))
    assert sum(c.pcm.numel() for c in chunks) == 960 * 12
    again = list(engine.stream("Hello world.", {"seed": 5, "ignore_eos": True, "max_new_tokens": 12, **FAST}))
    assert torch.equal(torch.cat([c.pcm for c in chunks]), torch.cat([c.pcm for c in again]))
    with pytest.raises(ValueError, match="empty"):
        list(engine.stream("   ", {}))
