"""`tts-pipeline http` on Chatterbox Turbo (built-in turbo-tiny): Turbo's knobs, its model id, its audio length."""
import json

import httpx
import pytest
from websockets.sync.client import connect

from .conftest import SEED, TAIL_TOKENS, TURBO_BYTES, TURBO_TOKENS, Server, turbo_body


@pytest.fixture(scope="module")
def turbo_server():
    s = Server("--preset", "turbo-tiny")
    try:
        yield s
    finally:
        s.stop()


def post(server, body) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)


def test_turbo_knobs_work_and_the_audio_has_the_silence_tail(turbo_server):
    r = post(turbo_server, turbo_body(model="chatterbox-turbo", top_k=50, cfg_weight=0.3))
    assert r.status_code == 200, r.text
    assert r.headers["x-seed"] == str(SEED) and len(r.content) == TURBO_BYTES
    # cfg_weight, exaggeration and min_p are accepted and change nothing (Turbo has no CFG); the family's name
    # and OpenAI's are aliases of the served model
    same = post(turbo_server, turbo_body(model="turbo", top_k=50, exaggeration=1.5, min_p=0.2))
    assert same.status_code == 200 and same.content == r.content
    with connect(turbo_server.url.replace("http://", "ws://") + "/v1/audio/stream") as ws:
        ws.send(json.dumps({"type": "request", "id": "t", **turbo_body(model="tts-1", top_k=50)}))
        pcm = bytearray()
        while (msg := json.loads(ws.recv(timeout=60)))["type"] not in ("end", "error"):
            if msg["type"] == "chunk":
                pcm += ws.recv(timeout=60)
    assert msg["type"] == "end" and msg["samples"] == 960 * (TURBO_TOKENS + TAIL_TOKENS) and bytes(pcm) == r.content


def test_turbo_names_its_model_and_refuses_the_other_one(turbo_server):
    r = post(turbo_server, turbo_body(model="chatterbox"))
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "model", r.text
    assert "this server runs chatterbox-turbo" in err["message"]
    r = post(turbo_server, turbo_body(top_k=-1))  # Turbo's own limit, named
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_k"
    r = post(turbo_server, turbo_body(cfg_weight="high"))  # ignored, but still typed
    assert r.status_code == 422 and r.json()["error"]["param"] == "cfg_weight"
    models = httpx.get(f"{turbo_server.url}/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["chatterbox-turbo"] and "turbo" in models[0]["aliases"]
    assert models[0]["family"] == "turbo" and models[0]["schedule_defaults"]["n_timesteps"] == 2
    assert httpx.get(f"{turbo_server.url}/v1/models/turbo").json()["id"] == "chatterbox-turbo"
    missing = httpx.get(f"{turbo_server.url}/v1/models/chatterbox")
    assert missing.status_code == 404 and "available: chatterbox-turbo" in missing.json()["error"]["message"]
    assert httpx.get(f"{turbo_server.url}/readyz").json()["model"] == "chatterbox-turbo"
