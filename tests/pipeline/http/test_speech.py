"""POST /v1/audio/speech against a live server: exact bytes, streaming, formats, the OpenAI SDK, bad bodies, load."""
import asyncio
import io
import json
import struct
import time

import httpx
import pytest
import soundfile

from .conftest import SEED, TEXT, TOKENS, cli_pcm, metric, speech_body, wait_for

BYTES_PER_TOKEN = 2 * 960  # s16le, 960 samples per speech token


def post(server, body):
    """json.dumps, not httpx's json=: it writes NaN (as JavaScript and Python clients can send it)."""
    return httpx.post(f"{server.url}/v1/audio/speech", content=json.dumps(body), timeout=60,
                      headers={"content-type": "application/json"})


def test_pcm_streams_the_clis_bytes_from_the_first_chunk(server):
    n = TOKENS  # chunks of 4, 8, 16 and 12 tokens: several pieces on the wire
    t0 = time.perf_counter()
    first = None
    pieces = []
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=speech_body(n, response_format="pcm"),
                      timeout=60) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "audio/pcm" and r.headers["transfer-encoding"] == "chunked"
        assert r.headers["x-seed"] == str(SEED) and "content-length" not in r.headers
        for piece in r.iter_raw():
            first = first or time.perf_counter() - t0
            pieces.append(piece)
    total = time.perf_counter() - t0
    body = b"".join(pieces)
    assert len(body) == BYTES_PER_TOKEN * n
    assert body == cli_pcm(TEXT, SEED, n)
    assert len(pieces) > 1 and first < total  # the first bytes came before the request finished


def test_wav_and_flac_decode_to_the_same_samples(server):
    n = TOKENS
    ref = cli_pcm(TEXT, SEED, n)
    streamed = post(server, speech_body(n, response_format="wav"))
    assert streamed.status_code == 200 and streamed.headers["content-type"] == "audio/wav"
    assert "content-length" not in streamed.headers  # streamed: the header's sizes are "unknown"
    assert struct.unpack("<I", streamed.content[4:8])[0] == 0xFFFFFFFF
    assert streamed.content[44:] == ref
    sized = post(server, speech_body(n, response_format="wav", stream=False))
    assert int(sized.headers["content-length"]) == len(sized.content) == 44 + len(ref)
    flac = post(server, speech_body(n, response_format="flac"))
    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac"
    for resp in (streamed, sized, flac):
        samples, rate = soundfile.read(io.BytesIO(resp.content), dtype="int16")
        assert rate == 24000 and samples.tobytes() == ref


@pytest.mark.parametrize("fmt,container", [("mp3", "MP3"), ("opus", "OGG")])
def test_lossy_formats_decode_to_the_right_length(server, fmt, container):
    n = TOKENS
    r = post(server, speech_body(n, response_format=fmt))
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    info = soundfile.info(io.BytesIO(r.content))
    assert info.format == container and info.samplerate == 24000 and info.channels == 1
    samples, _ = soundfile.read(io.BytesIO(r.content), dtype="int16")
    assert len(samples) == 960 * n


def test_the_openai_client_streams_it(server):
    import openai

    n = TOKENS
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-checked", max_retries=0)
    extra = {k: v for k, v in speech_body(n).items() if k not in ("model", "input", "voice")}
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=TEXT,
                                                            response_format="pcm", extra_body=extra) as r:
        data = b"".join(r.iter_bytes())
    assert data == cli_pcm(TEXT, SEED, n)  # alloy and tts-1 are aliases of the default voice and model
    models = client.models.list()
    assert [m.id for m in models.data] == ["chatterbox"]


def test_models_voices_health(server):
    voices = httpx.get(f"{server.url}/v1/audio/voices").json()
    assert voices["default"] == "default" and [v["id"] for v in voices["voices"]] == ["default"]
    assert "alloy" in voices["voices"][0]["aliases"]
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["model"] == "chatterbox"
    assert set(ready.json()["stages"]) == {"t3", "cfm", "hifigan"}
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert httpx.get(f"{server.url}/static/app.js").status_code == 200


@pytest.mark.parametrize("body,status,param,message", [
    ({"voice": "default"}, 422, "input", "input is required"),
    ({"input": ""}, 400, "input", "input is empty"),
    ({"input": "   "}, 400, "input", "input is empty"),
    ({"input": "x" * 4097}, 400, "input", "4097 characters, over the limit of 4096"),
    ({"input": "Hi.", "response_format": "ogg"}, 400, "response_format", "must be one of pcm, wav, flac, mp3, opus"),
    ({"input": "Hi.", "response_format": "aac"}, 400, "response_format", "no AAC encoder"),
    ({"input": "Hi.", "speed": 0}, 400, "speed", "speed 0.0 is not supported: only 1.0"),
    ({"input": "Hi.", "speed": 1.5}, 400, "speed", "speed 1.5 is not supported"),
    ({"input": "Hi.", "temperature": float("nan")}, 422, "temperature", "temperature must be a finite number"),
    ({"input": "Hi.", "temperature": 0}, 400, "temperature", "temperature must be > 0"),
    ({"input": "Hi.", "temperature": "hot"}, 422, "temperature", "valid number"),
    ({"input": "Hi.", "first_chunk_tokens": 0}, 400, "first_chunk_tokens", "first_chunk_tokens must be an integer"),
    ({"input": "Hi.", "max_new_tokens": 1.5}, 422, "max_new_tokens", "valid integer"),
    ({"input": "Hi.", "voice": "nobody"}, 400, "voice", "voice 'nobody' is not available"),
    ({"input": "Hi.", "model": "whisper-1"}, 400, "model", "model 'whisper-1' is not available"),
    ({"input": "Hi.", "model": "chatterbox-turbo"}, 400, "model", "this server runs chatterbox"),
    ({"input": "Hi.", "top_k": 50}, 400, "top_k", "top_k (not a chatterbox parameter)"),
    ({"input": "Hi.", "bogus": 1}, 422, "bogus", "bogus is not a field"),
    ({"input": "Hi.", "instructions": "Speak slowly."}, 400, "instructions", "instructions are not supported"),
    ({"input": "Hi.", "response_format": "flac", "stream": True}, 400, "stream", "'flac' cannot be streamed"),
])
def test_bad_bodies_get_their_status_and_name_the_field(server, body, status, param, message):
    r = post(server, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and message in err["message"], err
    assert "Traceback" not in r.text


def test_malformed_and_oversized_bodies(server):
    r = httpx.post(f"{server.url}/v1/audio/speech", content=b"{not json", timeout=30)
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/v1/audio/speech", content=json.dumps([1, 2]), timeout=30)
    assert r.status_code == 422 and "must be a JSON object" in r.json()["error"]["message"]
    r = post(server, {"input": "x" * 70_000})  # over the 64 KiB body limit, refused before it is parsed
    assert r.status_code == 413


def test_32_concurrent_streams_all_complete_with_exact_lengths(server):
    tokens = [2 + i % 4 for i in range(32)]

    async def one(client, i):
        body = speech_body(tokens[i], response_format="pcm", seed=100 + i)
        async with client.stream("POST", f"{server.url}/v1/audio/speech", json=body) as r:
            assert r.status_code == 200, await r.aread()
            return len(b"".join([piece async for piece in r.aiter_raw()]))

    async def all_of_them():
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    assert asyncio.run(all_of_them()) == [BYTES_PER_TOKEN * n for n in tokens]


def test_a_client_that_disconnects_cancels_its_request_everywhere(server):
    before = metric(server.url, "tts_requests_total", endpoint="speech", outcome="cancelled") or 0
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", timeout=60,
                      json=speech_body(1000, response_format="pcm", n_timesteps=10)) as r:
        assert r.status_code == 200
        pieces = r.iter_raw()
        assert next(pieces)  # audio is flowing; leaving the block closes the connection mid-stream
    wait_for(lambda: metric(server.url, "tts_requests_total", endpoint="speech", outcome="cancelled") == before + 1,
             what="the cancelled outcome")
    # the cancel went T3 -> CFM -> HiFiGAN and came back (no end message): the coordinator holds nothing
    wait_for(lambda: metric(server.url, "tts_engine_requests_total", end="cancelled") == 1, what="the engine's cancel")
    wait_for(lambda: metric(server.url, "tts_pipeline_requests", state="active") == 0, what="the pipeline to be empty")
    assert metric(server.url, "tts_http_streams") == 0
    r = post(server, speech_body(5, response_format="pcm"))  # nothing else was lost
    assert r.status_code == 200 and len(r.content) == BYTES_PER_TOKEN * 5


def test_metrics_name_what_happened(server):
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("tts_requests_total", "tts_ttfb_seconds_bucket", "tts_chunk_interval_seconds_bucket", "tts_rtf_bucket",
                 "tts_audio_seconds_total", "tts_engine_requests_total", "tts_http_streams", "tts_stage_busy_seconds_total", "tts_pipeline_ready",
                 "tts_stage_up", "tts_stage_restarts_total", "tts_pipeline_requests"):
        assert name in text, name
    assert metric(server.url, "tts_requests_total", endpoint="speech", outcome="ok") >= 1
    assert metric(server.url, "tts_stage_busy_seconds_total", stage="t3") > 0
    assert metric(server.url, "tts_pipeline_ready") == 1
