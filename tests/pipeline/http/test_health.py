"""Readiness and overload on a live server: 503 while starting, 503 + Retry-After past --max-streams, 503 while a
stage that died is restarted, 200 again once it is back."""
import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from .conftest import TEXT, Server, metric, speech_body, wait_for


def stage_pid(server, stage: str) -> int:
    """The stage process by its name (each stage names itself tts-<stage>)."""
    for pid in server.stage_pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == f"tts-{stage}":
                return pid
        except OSError:
            continue
    raise AssertionError(f"no tts-{stage} process under the server")


def test_starting_busy_and_a_dead_stage():
    server = Server("--max-streams", "1", wait_ready=False)
    try:
        # right after it listens the stage processes are still importing torch: not ready, come back soon
        r = httpx.get(f"{server.url}/readyz", timeout=30)
        assert r.status_code == 503 and r.json()["reason"] == "starting" and r.headers["retry-after"] == "1"
        assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200  # the process is up
        r = httpx.post(f"{server.url}/v1/audio/speech", json=speech_body(3), timeout=30)
        assert r.status_code == 503 and r.json()["error"]["message"] == "not ready: starting"
        server.wait_ready()
        assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200

        # one stream is the limit: a second request is refused at once, over HTTP and over the WebSocket
        with httpx.stream("POST", f"{server.url}/v1/audio/speech", timeout=60,
                          json=speech_body(1000, response_format="pcm", n_timesteps=10)) as held:
            assert held.status_code == 200
            pieces = held.iter_raw()  # kept: a dropped iterator would close the stream
            assert next(pieces)
            r = httpx.post(f"{server.url}/v1/audio/speech", json=speech_body(3), timeout=30)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["message"].startswith("server busy: 1 synthesis streams running")
            with connect(server.url.replace("http://", "ws://") + "/v1/audio/stream") as ws:
                ws.send(json.dumps({"type": "request", "id": "w", "input": TEXT, "max_new_tokens": 3}))
                err = json.loads(ws.recv(timeout=30))
                assert err["type"] == "error" and err["id"] == "w" and err["status"] == 503
        wait_for(lambda: metric(server.url, "tts_http_streams") == 0, what="the held stream to end")
        assert metric(server.url, "tts_requests_total", endpoint="speech", outcome="busy") == 1
        assert metric(server.url, "tts_requests_total", endpoint="ws", outcome="busy") == 1
        r = httpx.post(f"{server.url}/v1/audio/speech", json=speech_body(3, response_format="pcm"), timeout=30)
        assert r.status_code == 200 and len(r.content) == 2 * 960 * 3

        # a stage dies mid-stream: that response is cut off (no final chunk: an error, never a short success),
        # the server is not ready while the stage is restarted and says which stage; requests meanwhile get
        # 503 (not a hang or a 500); once the stage is back the server is ready and serves again
        pid = stage_pid(server, "t3")
        with httpx.stream("POST", f"{server.url}/v1/audio/speech", timeout=60,
                          json=speech_body(1000, response_format="pcm", n_timesteps=10)) as doomed:
            pieces = doomed.iter_raw()
            got = len(next(pieces))
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                for piece in pieces:
                    got += len(piece)
        assert 0 < got < 2 * 960 * 1000
        r = wait_for(lambda: (r := httpx.get(f"{server.url}/readyz", timeout=30)).status_code == 503 and r,
                     what="/readyz to say 503")
        # (a restart re-imports torch and reloads the model, seconds: the checks below run well inside it)
        assert f"stage t3 (pid {pid}) died" in r.json()["reason"] and r.json()["stages"]["t3"]["alive"] is False
        assert r.json()["stages"]["t3"]["state"] == "restarting"
        assert metric(server.url, "tts_stage_up", stage="t3") == 0 and metric(server.url, "tts_pipeline_ready") == 0
        r = httpx.post(f"{server.url}/v1/audio/speech", json=speech_body(3), timeout=30)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert r.json()["error"]["message"].startswith(f"not ready: restarting: stage t3 (pid {pid}) died")
        r = wait_for(lambda: (r := httpx.get(f"{server.url}/readyz", timeout=30)).status_code == 200 and r,
                     timeout=120, what="the restarted t3 to be ready")
        assert r.json()["stages"]["t3"] == {"alive": True, "restarts": 1, "state": "up"}
        assert metric(server.url, "tts_stage_restarts_total", stage="t3") == 1 and metric(server.url, "tts_pipeline_ready") == 1
        r = httpx.post(f"{server.url}/v1/audio/speech", json=speech_body(3, response_format="pcm"), timeout=30)
        assert r.status_code == 200 and len(r.content) == 2 * 960 * 3
    finally:
        server.stop()  # still a clean exit: code 0, the other stages stopped, nothing left behind
