"""WS /v1/audio/stream against a live server: two requests on one connection, incremental text, errors, disconnect."""
import json

from websockets.sync.client import connect

from .conftest import FAST, SEED, TEXT, TOKENS, cli_pcm, metric, wait_for

KNOBS = {"seed": SEED, "ignore_eos": True, "max_new_tokens": TOKENS, **FAST}


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/v1/audio/stream"


def read_request(ws) -> tuple[dict, list[dict], bytes, dict]:
    """One request's messages: its start, its chunk headers, the PCM of its binary frames, its end (or error)."""
    start = json.loads(ws.recv(timeout=60))
    if start["type"] == "error":
        return start, [], b"", start
    assert start["type"] == "start", start
    heads, pcm = [], bytearray()
    while True:
        msg = json.loads(ws.recv(timeout=60))
        if msg["type"] != "chunk":
            return start, heads, bytes(pcm), msg
        frame = ws.recv(timeout=60)
        assert isinstance(frame, bytes) and len(frame) == 2 * msg["samples"], msg
        assert msg["start"] == len(pcm) // 2  # each chunk starts where the previous one ended
        heads.append(msg)
        pcm += frame


def test_two_requests_on_one_connection_give_the_clis_bytes(server):
    ref = cli_pcm(TEXT, SEED, TOKENS)
    with connect(ws_url(server)) as ws:
        ws.send(json.dumps({"type": "request", "id": "first", "input": TEXT, **KNOBS}))
        half = len(TEXT) // 2  # the same text again, appended in two pieces, then flushed
        ws.send(json.dumps({"type": "append", "input": TEXT[:half]}))
        ws.send(json.dumps({"type": "append", "input": TEXT[half:]}))
        ws.send(json.dumps({"type": "flush", "id": "second", **KNOBS}))
        for rid in ("first", "second"):
            start, heads, pcm, end = read_request(ws)
            assert start["id"] == rid and start["seed"] == SEED and start["sample_rate"] == 24000
            assert end == {"type": "end", "id": rid, "request_id": heads[0]["request_id"], "samples": 960 * TOKENS,
                           "cancelled": False}
            assert len(heads) > 1 and pcm == ref


def test_a_bad_message_is_an_error_and_the_connection_carries_on(server):
    with connect(ws_url(server)) as ws:
        ws.send(json.dumps({"type": "request", "id": "bad", "input": TEXT, "temperature": 0}))
        err = json.loads(ws.recv(timeout=30))
        assert err["type"] == "error" and err["id"] == "bad" and err["status"] == 400
        assert err["param"] == "temperature" and "temperature must be > 0" in err["message"]
        ws.send(json.dumps({"type": "dance"}))
        err = json.loads(ws.recv(timeout=30))
        assert err["status"] == 422 and err["param"] == "type"
        ws.send(json.dumps({"type": "flush", **KNOBS}))  # nothing appended
        err = json.loads(ws.recv(timeout=30))
        assert err["status"] == 400 and err["param"] == "input" and "input is empty" in err["message"]
        ws.send(b"\x00\x01")
        assert "binary messages are not accepted" in json.loads(ws.recv(timeout=30))["message"]
        ws.send(json.dumps({"type": "request", "input": TEXT, **{**KNOBS, "max_new_tokens": 3}}))
        start, heads, pcm, end = read_request(ws)
        assert end["type"] == "end" and len(pcm) == 2 * 960 * 3


def test_cancel_message_and_disconnect_free_the_request_everywhere(server):
    long = {**KNOBS, "max_new_tokens": 1000, "n_timesteps": 10}
    with connect(ws_url(server)) as ws:
        ws.send(json.dumps({"type": "request", "id": "long", "input": TEXT, **long}))
        assert json.loads(ws.recv(timeout=60))["type"] == "start"
        assert json.loads(ws.recv(timeout=60))["type"] == "chunk"
        ws.send(json.dumps({"type": "cancel"}))
        while True:  # chunks already on their way, then the end
            msg = ws.recv(timeout=60)
            if isinstance(msg, str) and json.loads(msg)["type"] == "end":
                end = json.loads(msg)
                break
        assert end["cancelled"] is True and 0 < end["samples"] < 960 * 1000
        ws.send(json.dumps({"type": "request", "id": "long2", "input": TEXT, **long}))
        assert json.loads(ws.recv(timeout=60))["type"] == "start"
        assert json.loads(ws.recv(timeout=60))["type"] == "chunk"
    # the connection closed mid-stream: its request is cancelled in every stage
    wait_for(lambda: metric(server.url, "tts_requests_total", endpoint="ws", outcome="cancelled") == 2,
             what="two cancelled WebSocket requests")
    wait_for(lambda: metric(server.url, "tts_engine_requests_total", end="cancelled") == 2,
             what="both cancels to come back through every stage")
    wait_for(lambda: metric(server.url, "tts_pipeline_requests", state="active") == 0, what="the pipeline to be empty")
    assert metric(server.url, "tts_http_streams") == 0
