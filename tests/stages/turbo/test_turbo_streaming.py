"""Turbo streaming in process (the stage classes the pipeline runs): exact sample counts with the 3 silence
tokens for every token count, under several schedules, through the batched stage workers; equal to offline
synthesis in length."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ipc.schema import Audio, End

from pipeline.sequential import Engine, offline_synthesize, stream_tokens
from stages.cfm.meanflow import N_SILENCE_TOKENS, SILENCE_TOKEN
from stages.cfm.schedule import ChunkSchedule
from stages.cfm.worker import CFMWorker
from stages.common.params import parse_params
from stages.common.spec import ModelSpec
from stages.hifigan.worker import HiFiGANWorker
from tests.chain import interleave, of, pump, token_messages

# Counts depend on the schedule and the token count only: 1 solver step and a short prompt window keep it cheap.
CHEAP = {"n_timesteps": 1, "prompt_tokens": 8}
SCHEDULES = [{"first_chunk_tokens": 1, "growth": 1.0, "max_hop_tokens": 25, "left_context_tokens": 0},
             {"first_chunk_tokens": 4},
             {"first_chunk_tokens": 10, "extra_lookahead_tokens": 2, "vocoder_lookahead_frames": 4}]


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest, and no oversubscription
    return Engine(ModelSpec(preset="turbo-tiny"))


def tokens_of(n: int) -> list[int]:
    return torch.randint(0, 6561, (n,), generator=torch.Generator().manual_seed(n)).tolist()


def test_every_token_count_0_to_60_gives_n_plus_3_tokens_of_audio_in_a_batch(engine):
    """Through the stage workers the pipeline runs (sharing batches): (n + 3) * 960 samples, in order."""
    cfm, voc = CFMWorker(engine.cfm), HiFiGANWorker(engine.hift, model="turbo")
    msgs = interleave(*[token_messages(f"n{n}", n, n, step=1 + n % 4, **CHEAP, **SCHEDULES[n % 3]) for n in range(61)])
    out = pump([cfm, voc], *msgs)
    for n in range(61):
        audio = of(f"n{n}", Audio, out)
        assert [m.start for m in audio] == list(np.cumsum([0] + [m.pcm.size for m in audio]))[: len(audio)], n
        assert sum(m.pcm.size for m in audio) == 960 * (n + 3), n
        (end,) = of(f"n{n}", End, out)
        assert end.totals == {"tokens": n + 3, "frames": 2 * (n + 3), "samples": 960 * (n + 3)}, n
    assert len(cfm.table) == len(voc.table) == 0 and not cfm.batch


def test_streamed_equals_offline_length_and_ignores_invalid_ids(engine):
    for n in (0, 1, 4, 23):
        toks = tokens_of(n)
        req = parse_params({"seed": 5, **CHEAP}, model="turbo")
        streamed = torch.cat([c.pcm for c in stream_tokens(engine, req, toks + [6561, 6562, 7000])])
        offline = offline_synthesize(engine, toks, 5, n_timesteps=1)
        assert streamed.shape == offline.shape == ((n + 3) * 960,)
        assert torch.isfinite(streamed).all()


def test_the_tail_is_three_silence_tokens_decoded_as_tokens(engine):
    from stages.cfm.part import new_cfm_stream

    cfm = new_cfm_stream(engine.cfm, parse_params({"seed": 1}, model="turbo"))
    cfm.push(tokens_of(6))
    frames = sum(m.mel.shape[-1] for m in cfm.finish())
    assert cfm.tokens[-N_SILENCE_TOKENS:] == [SILENCE_TOKEN] * N_SILENCE_TOKENS and len(cfm.tokens) == 9
    assert cfm.frames_emitted == 18 and frames <= 18
    assert engine.schedule == ChunkSchedule(**{**ChunkSchedule().to_dict(), **engine.schedule.to_dict()})
    assert engine.schedule.n_timesteps == 2
