"""The HTTP layer's pure parts, without a server: error classification, the streamed WAV header, the body schema."""
import io

import numpy as np
import pytest
import soundfile

from ipc.schema import Info
from pipeline.client import RemoteError
from pipeline.coordinator import RequestError
from pipeline.http.backend import Served, error_kind, served_from_info
from pipeline.http.encoders import Encoder, wav_stream_header
from pipeline.http.responses import api_error
from pipeline.http.schema import KNOBS, ApiError, prepare, validate_body
from stages.cfm.schedule import ChunkSchedule, default_schedule
from stages.t3.sampling import SamplingParams
from stages.t3.turbo_sampling import TurboSamplingParams

BASE = Served("chatterbox", ChunkSchedule())
TURBO = Served("turbo", default_schedule("turbo"))
FORMATS = ("pcm", "mp3")  # the body's default format is mp3


@pytest.mark.parametrize("exc,status,outcome", [
    (RequestError("coordinator: server busy: 4 in flight and 16 queued (--max-inflight, --max-queue)"), 503, "busy"),
    (RequestError("server busy"), 503, "busy"),
    (RemoteError("coordinator: server busy: try later"), 503, "busy"),
    (RequestError("pipeline: stage t3 (pid 12) died (exit code -9)"), 503, "unavailable"),
    (RemoteError("no welcome from the publisher: is `tts-pipeline serve` running at that endpoint?"), 503, "unavailable"),
    (RuntimeError("the pipeline is not running (use it as a context manager)"), 503, "unavailable"),
    (RequestError("t3: text is too long: 3001 tokens, the model's limit is 2048 (split it into sentences)"), 400, "rejected"),
    (ValueError("request id 'x' is already in use"), 400, "rejected"),
    (RequestError("t3: non-finite logits at step 3"), 500, "error"),
    (KeyError("boom"), 500, "error"),
])
def test_failures_map_to_a_status_and_never_a_trace(exc, status, outcome):
    err, got = api_error(exc)
    assert (err.status, got) == (status, outcome)
    if error_kind(exc) == "internal":
        assert err.message == "internal error (see the server's log)"  # details stay in the server's log
    else:
        assert str(exc) in err.message


def test_streamed_wav_header_is_read_to_the_end():
    pcm = np.linspace(-0.5, 0.5, 2400, dtype=np.float32)
    enc = Encoder("wav", streaming=True)
    body = enc.encode(pcm[:1000]) + enc.encode(pcm[1000:]) + enc.finish()
    assert body[:44] == wav_stream_header() and len(body) == 44 + 2 * 2400
    samples, rate = soundfile.read(io.BytesIO(body), dtype="int16")
    assert rate == 24000 and samples.tobytes() == Encoder("pcm", streaming=True).encode(pcm)


def test_the_body_accepts_every_engine_knob_and_resolves_the_seed():
    names = {f for cls in (SamplingParams, TurboSamplingParams, ChunkSchedule) for f in cls.__dataclass_fields__}
    assert set(KNOBS) == names - {"voice"} and "top_k" in KNOBS
    body = validate_body({"input": "Hi.", "voice": "alloy", "response_format": "wav", "temperature": 1,
                          "left_context_tokens": "all", "vocoder_lookahead_frames": 4})
    p = prepare(body, ("pcm", "wav"), BASE)
    assert p.streaming and p.fmt == "wav" and isinstance(p.params["seed"], int)
    assert {k: p.params[k] for k in ("temperature", "left_context_tokens", "vocoder_lookahead_frames")} == \
        {"temperature": 1.0, "left_context_tokens": "all", "vocoder_lookahead_frames": 4}
    with pytest.raises(ApiError) as e:  # a cross-field limit names a field it involves
        prepare(validate_body({"input": "Hi.", "first_chunk_tokens": 40}), ("mp3",), BASE)
    assert e.value.status == 400 and e.value.param == "first_chunk_tokens" and "max_hop_tokens" in e.value.message


def refusal(body: dict, served: Served) -> ApiError:
    with pytest.raises(ApiError) as e:
        prepare(validate_body({"input": "Hi.", **body}), FORMATS, served)
    return e.value


def test_each_family_validates_with_its_own_rules():
    p = prepare(validate_body({"input": "Hi.", "top_k": 50, "cfg_weight": 0.3, "exaggeration": 2.0, "min_p": 0.1}),
                FORMATS, TURBO)
    assert p.params["top_k"] == 50 and p.params["cfg_weight"] == 0.3  # base-only knobs: accepted, no effect
    err = refusal({"top_k": 50, "temperature": 0.7}, BASE)
    assert (err.status, err.param) == (400, "top_k") and "not a chatterbox parameter" in err.message
    err = refusal({"top_k": -1}, TURBO)  # the Turbo sampler's own limit
    assert (err.status, err.param) == (400, "top_k") and "top_k must be an integer >= 0" in err.message
    err = refusal({"cfg_weight": -1}, TURBO)  # ignored, but still a number >= 0 (parse_params)
    assert (err.status, err.param) == (400, "cfg_weight")
    assert "[laugh]" in refusal({"instructions": "Laugh."}, TURBO).message
    assert "exaggeration" in refusal({"instructions": "Laugh."}, BASE).message


@pytest.mark.parametrize("served,accepted,refused", [
    (BASE, (None, "chatterbox", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"), ("chatterbox-turbo", "turbo", "whisper-1")),
    (TURBO, (None, "chatterbox-turbo", "turbo", "tts-1", "gpt-4o-mini-tts"), ("chatterbox", "whisper-1")),
])
def test_model_names_are_the_served_id_the_family_and_openais(served, accepted, refused):
    for name in accepted:
        prepare(validate_body({"input": "Hi.", "model": name}), FORMATS, served)
    runs = "chatterbox-turbo" if served is TURBO else "chatterbox"
    for name in refused:
        err = refusal({"model": name}, served)
        assert (err.status, err.param) == (400, "model") and f"this server runs {runs}" in err.message, err.message


def test_what_a_remote_server_runs_comes_from_its_info_answer():
    assert served_from_info(Info(rid="x", model="turbo", schedule=default_schedule("turbo").to_dict())) == TURBO
    assert served_from_info(None) == BASE  # a server from before `info`: the base model, ChunkSchedule()'s defaults
    with pytest.raises(ValueError, match="info.model must be one of chatterbox, turbo, got 'whisper'"):
        served_from_info(Info(rid="x", model="whisper"))
    with pytest.raises(ValueError, match="n_timesteps"):
        served_from_info(Info(rid="x", model="turbo", schedule={"n_timesteps": 0}))
