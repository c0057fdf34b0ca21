"""The first-audio knob first_chunk_timesteps: the first chunk's flow call takes its own step count, the rest
n_timesteps; sample counts are unchanged; a bad value is an error naming it."""
from __future__ import annotations

import pytest

from stages.cfm.part import load_cfm_part, new_cfm_stream
from stages.cfm.schedule import ChunkSchedule
from stages.common.params import parse_params
from stages.common.spec import ModelSpec
from tests.chain import token_ids


def jobs(params):
    stream = new_cfm_stream(load_cfm_part(ModelSpec()), parse_params({"seed": 1, **params}))
    stream.add(token_ids(30, 1).tolist())
    return list(iter(stream.plan, None)) + [stream.plan_final()]


def test_only_the_first_chunk_takes_first_chunk_timesteps():
    js = jobs({"n_timesteps": 5, "first_chunk_timesteps": 2})
    assert [j.n_timesteps for j in js] == [2] + [5] * (len(js) - 1) and len(js) > 2 and js[0].start == 0
    assert [j.n_timesteps for j in jobs({"n_timesteps": 5})] == [5] * len(js)  # unset: every chunk n_timesteps
    assert [j.frames for j in js] == [j.frames for j in jobs({"n_timesteps": 5})]  # same windows, same counts


@pytest.mark.parametrize("bad", [0, 101, 2.5, "4"])
def test_bad_first_chunk_timesteps_names_the_field(bad):
    with pytest.raises(ValueError, match="first_chunk_timesteps"):
        ChunkSchedule(first_chunk_timesteps=bad)
