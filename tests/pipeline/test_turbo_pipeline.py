"""Chatterbox Turbo through the multi-process pipeline (built-in turbo-tiny): it equals --sequential, concurrent
requests equal each alone, a Turbo and a base-model pipeline side by side in one process share nothing, and
Turbo speaks voices cloned for it (stored by `voice add`, or from a request's recording) and refuses the
base model's."""
import threading

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from ipc.schema import Error

from pipeline.api import Pipeline
from pipeline.cli import main
from pipeline.coordinator import RequestError
from pipeline.launcher import PipelineConfig
from pipeline.models import ModelSpec
from pipeline.sequential import Engine
from stages.voice.store import VoiceStore
from tests.golden_turbo import load_case

TURBO = ModelSpec(preset="turbo-tiny")
PARAMS = {"seed": 21, "ignore_eos": True, "max_new_tokens": 14, "n_timesteps": 1, "prompt_tokens": 8}
BASE_PARAMS = {"seed": 21, "ignore_eos": True, "max_new_tokens": 14, "n_timesteps": 1}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The golden turbo-tiny voice recording (5.05 s at 24 kHz: just over Turbo's 5 s minimum)."""
    path = tmp_path_factory.mktemp("ref") / "ref.wav"
    sf.write(str(path), load_case("voice_prompt_t3")["wav_file_24k"].numpy(), 24000, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def vdir(tmp_path_factory, ref):
    """`voice add` (the real command, in-process) of one recording for each family: `tv` (Turbo), `bv` (base)."""
    d = tmp_path_factory.mktemp("voices")
    torch.set_num_threads(1)  # a voice's floats depend on the thread count: the same count as the voice_file test's
    for name, preset in (("tv", "turbo-tiny"), ("bv", "tiny")):
        r = CliRunner().invoke(main, ["voice", "add", name, str(ref), "--preset", preset, "--voices-dir", str(d), "--quiet"])
        assert r.exit_code == 0, r.output
    return d


@pytest.fixture(scope="module")
def pipelines(vdir):
    """A Turbo and a base-model pipeline, both running, in this one process (one voices folder)."""
    with Pipeline(PipelineConfig(model=TURBO, threads=1, voices_dir=vdir)) as turbo, \
            Pipeline(PipelineConfig(model=ModelSpec(), threads=1, voices_dir=vdir)) as base:
        yield turbo, base


@pytest.fixture(scope="module")
def sequential(vdir):
    torch.set_num_threads(1)  # the stage processes run 1 thread each
    turbo, base = Engine(TURBO, voices_dir=vdir), Engine(ModelSpec(), voices_dir=vdir)
    return ({t: torch.cat([c.pcm for c in turbo.stream(t, PARAMS)]).numpy() for t in ("Same audio?", "Another one.")},
            torch.cat([c.pcm for c in base.stream("Same audio?", BASE_PARAMS)]).numpy(),
            torch.cat([c.pcm for c in turbo.stream("Same audio?", {**PARAMS, "voice": "tv"})]).numpy())


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


def test_voice_add_makes_a_turbo_voice(vdir):
    """Turbo's conditioning: the whole 5.05 s clip in the T3 prompt (15 s window, 375 at most), the family recorded."""
    store = VoiceStore(vdir)
    tv, bv = store.info("tv"), store.info("bv")
    assert (tv.family, bv.family) == ("turbo", "chatterbox")
    golden = list(load_case("voice_prompt_t3")["cond_prompt_speech_tokens"].shape)  # the reference's: [1, 127]
    assert tv.manifest["tensors"]["t3.cond_prompt_speech_tokens"]["shape"] == golden  # 5.05 s at 25 Hz
    assert bv.manifest["tensors"]["t3.cond_prompt_speech_tokens"]["shape"] == golden  # under the base's 6 s too
    assert tv.t3_key != bv.t3_key and tv.cfm_key != bv.cfm_key  # the -27 LUFS gain changes the tokens and the mel


def test_turbo_speaks_a_stored_turbo_voice_as_the_sequential_path_does(pipelines, sequential):
    turbo, _ = pipelines
    pcm = turbo.synthesize("Same audio?", voice="tv", **PARAMS)
    assert pcm.size == 960 * (14 + 3)
    assert pcm.tobytes() == sequential[2].tobytes()
    assert not np.array_equal(pcm, sequential[0]["Same audio?"])  # not the default voice


def test_a_recording_becomes_the_same_turbo_voice(pipelines, sequential, ref):
    turbo, _ = pipelines
    torch.set_num_threads(1)  # the front end computes the voice in this process: as `voice add` did (vdir)
    pcm = np.concatenate([c.pcm for c in turbo.stream("Same audio?", voice_file=str(ref), **PARAMS)])
    assert pcm.tobytes() == sequential[2].tobytes()  # the same recording, the same model: the same voice


def test_each_family_refuses_the_others_voices(pipelines, ref):
    turbo, base = pipelines
    with pytest.raises(ValueError, match="voice 'bv' was made for the Chatterbox model and this one runs Chatterbox Turbo"):
        turbo.synthesize("No.", voice="bv", **PARAMS)
    with pytest.raises(ValueError, match="voice 'tv' was made for the Chatterbox Turbo model and this one runs Chatterbox:"):
        base.synthesize("No.", voice="tv", **BASE_PARAMS)
    _, sink, _ = turbo.coordinator.submit("No.", {**PARAMS, "voice": "bv"})  # past the API's check: T3 refuses it
    msg = sink.get(timeout=60)
    assert isinstance(msg, Error) and msg.stage == "t3" and "made for the Chatterbox model" in msg.message
    assert turbo.synthesize("Still fine.", voice="tv", **PARAMS).size == 960 * 17
