"""What phase 2 relies on: the existing CFM and vocoder streams drive the meanflow flow unchanged, and the
3 silence tokens, sent as the stream's last tokens, give exactly the offline (n + 3) * 960 samples."""
from __future__ import annotations

import pytest
import torch

from stages.common.params import RequestParams
from pipeline.sequential import stream_tokens
from stages.cfm.meanflow import N_SILENCE_TOKENS, SILENCE_TOKEN
from stages.cfm.schedule import ChunkSchedule
from stages.t3.turbo_sampling import TurboSamplingParams

SCHEDULES = [ChunkSchedule(n_timesteps=2),
             ChunkSchedule(first_chunk_tokens=1, growth=1.0, max_hop_tokens=1, left_context_tokens=0,
                           prompt_tokens=0, n_timesteps=2)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["default", "one-token-hops"])
@pytest.mark.parametrize("n", [0, 5])
def test_streamed_sample_count_with_the_silence_tail(turbo_engine, schedule, n):
    tokens = [int(t) for t in torch.randint(0, 6561, (n,), generator=torch.Generator().manual_seed(n))]
    req = RequestParams(TurboSamplingParams(seed=3), schedule)
    chunks = list(stream_tokens(turbo_engine, req, tokens + [SILENCE_TOKEN] * N_SILENCE_TOKENS))  # checks totals
    assert sum(c.pcm.numel() for c in chunks) == (n + 3) * 960
    assert [c.start for c in chunks] == [sum(x.pcm.numel() for x in chunks[:i]) for i in range(len(chunks))]
    assert turbo_engine.synthesize(tokens, seed=3).shape == ((n + 3) * 960,)
