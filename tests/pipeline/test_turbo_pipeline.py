"""Chatterbox Turbo through the multi-process pipeline (built-in turbo-tiny): it equals --sequential, concurrent
requests equal each alone, and a Turbo and a base-model pipeline side by side in one process share nothing."""
import threading

import pytest
import torch

from pipeline.api import Pipeline
from pipeline.coordinator import RequestError
from pipeline.launcher import PipelineConfig
from pipeline.models import ModelSpec
from pipeline.sequential import Engine

TURBO = ModelSpec(preset="turbo-tiny")
PARAMS = {"seed": 21, "ignore_eos": True, "max_new_tokens": 14, "n_timesteps": 1, "prompt_tokens": 8}
BASE_PARAMS = {"seed": 21, "ignore_eos": True, "max_new_tokens": 14, "n_timesteps": 1}


@pytest.fixture(scope="module")
def pipelines():
    """A Turbo and a base-model pipeline, both running, in this one process."""
    with Pipeline(PipelineConfig(model=TURBO, threads=1)) as turbo, \
            Pipeline(PipelineConfig(model=ModelSpec(), threads=1)) as base:
        yield turbo, base


@pytest.fixture(scope="module")
def sequential():
    torch.set_num_threads(1)  # the stage processes run 1 thread each
    turbo, base = Engine(TURBO), Engine(ModelSpec())
    return ({t: torch.cat([c.pcm for c in turbo.stream(t, PARAMS)]).numpy() for t in ("Same audio?", "Another one.")},
            torch.cat([c.pcm for c in base.stream("Same audio?", BASE_PARAMS)]).numpy())


def test_turbo_multiprocess_equals_sequential_and_counts_the_silence_tail(pipelines, sequential):
    turbo, _ = pipelines
    mp = turbo.synthesize("Same audio?", **PARAMS)
    assert mp.size == 960 * (14 + 3)
    assert mp.tobytes() == sequential[0]["Same audio?"].tobytes()


def test_turbo_and_base_pipelines_side_by_side_share_no_state(pipelines, sequential):
    """Interleaved requests on both pipelines: each gives exactly its model's solo audio; each refuses the
    other family's parameters."""
    turbo, base = pipelines
    results = {}

    def consume(key, tts, text, params):
        results[key] = tts.synthesize(text, **params)

    jobs = [("t0", turbo, "Same audio?", PARAMS), ("b0", base, "Same audio?", BASE_PARAMS),
            ("t1", turbo, "Another one.", PARAMS), ("b1", base, "Same audio?", BASE_PARAMS)]
    threads = [threading.Thread(target=consume, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["t0"].tobytes() == sequential[0]["Same audio?"].tobytes()
    assert results["t1"].tobytes() == sequential[0]["Another one."].tobytes()
    assert results["b0"].tobytes() == results["b1"].tobytes() == sequential[1].tobytes()
    assert results["b0"].size == 960 * 14  # no tail on the base model
    with pytest.raises(ValueError, match=r"top_k \(not a chatterbox parameter\)"):
        base.synthesize("No.", top_k=5)
    assert turbo.synthesize("Yes.", **{**PARAMS, "top_k": 5, "cfg_weight": 0.5}).size == 960 * 17


def test_turbo_bad_input_fails_alone(pipelines):
    turbo, _ = pipelines
    with pytest.raises((ValueError, RequestError), match="top_k must be an integer >= 0"):
        turbo.synthesize("Bad top-k.", **{**PARAMS, "top_k": -1})
    assert turbo.synthesize("Still here.", **PARAMS).size == 960 * 17


def test_say_on_turbo_writes_960_x_tokens_plus_3():
    """The CLI end to end on Turbo (--sequential: one process): --top-k accepted, the tail counted per segment,
    a base-model-only cap refused with the model's own limit."""
    from .conftest import run_cli

    r = run_cli("say", "--preset", "turbo-tiny", "--sequential", "--ignore-eos", "--max-new-tokens", "4",
                "--n-timesteps", "1", "--top-k", "50", "--seed", "2", "--format", "f32le", "Just one segment.")
    assert r.returncode == 0, r.stderr.decode()
    assert len(r.stdout) == 4 * 960 * (4 + 3)  # f32le: 4 bytes a sample, the 3 silence tokens included
    r = run_cli("say", "--preset", "turbo-tiny", "--sequential", "--max-new-tokens", "1002", "x")
    assert r.returncode != 0 and b"over this model's limit of 1001" in r.stderr
