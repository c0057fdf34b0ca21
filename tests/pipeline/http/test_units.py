"""The HTTP layer's pure parts, without a server: error classification, the streamed WAV header, the body schema."""
import io

import numpy as np
import pytest
import soundfile

from pipeline.client import RemoteError
from pipeline.coordinator import RequestError
from pipeline.http.backend import error_kind
from pipeline.http.encoders import Encoder, wav_stream_header
from pipeline.http.responses import api_error
from pipeline.http.schema import KNOBS, ApiError, prepare, validate_body
from stages.cfm.schedule import ChunkSchedule
from stages.t3.sampling import SamplingParams


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
    names = {f for cls in (SamplingParams, ChunkSchedule) for f in cls.__dataclass_fields__}
    assert set(KNOBS) == names - {"voice"}
    body = validate_body({"input": "Hi.", "voice": "alloy", "response_format": "wav", "temperature": 1,
                          "left_context_tokens": "all", "vocoder_lookahead_frames": 4})
    p = prepare(body, ("pcm", "wav"), ChunkSchedule())
    assert p.streaming and p.fmt == "wav" and isinstance(p.params["seed"], int)
    assert {k: p.params[k] for k in ("temperature", "left_context_tokens", "vocoder_lookahead_frames")} == \
        {"temperature": 1.0, "left_context_tokens": "all", "vocoder_lookahead_frames": 4}
    with pytest.raises(ApiError) as e:  # a cross-field limit names a field it involves
        prepare(validate_body({"input": "Hi.", "first_chunk_tokens": 40}), ("mp3",), ChunkSchedule())
    assert e.value.status == 400 and e.value.param == "first_chunk_tokens" and "max_hop_tokens" in e.value.message
