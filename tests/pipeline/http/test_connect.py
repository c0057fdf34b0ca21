"""`tts-pipeline http --connect` in front of a running `tts-pipeline serve`: the same bytes, cancels, readiness."""
import os
import re
import subprocess

import httpx

from ..conftest import CLI
from .conftest import SEED, TEXT, TOKENS, Server, cli_pcm, metric, speech_body, wait_for


def start_serve() -> tuple[subprocess.Popen, dict[str, str]]:
    serve = subprocess.Popen([*CLI, "serve", "--threads", "1"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    endpoints = {}
    for line in serve.stderr:  # the endpoints are printed once the pipeline is up
        m = re.match(rb"(requests|publish): (\S+)", line)
        if m:
            endpoints[m.group(1).decode()] = m.group(2).decode()
        if len(endpoints) == 2:
            break
    assert len(endpoints) == 2, "serve did not print its endpoints"
    return serve, endpoints


def test_http_in_front_of_a_running_serve():
    serve, eps = start_serve()
    server = None
    try:
        server = Server("--connect", eps["requests"], "--pub", eps["publish"])
        r = httpx.get(f"{server.url}/readyz", timeout=30)  # probes the server: its welcome proves it is there
        assert r.status_code == 200 and r.json()["ready"] is True
        r = httpx.post(f"{server.url}/v1/audio/speech", json=speech_body(TOKENS, response_format="pcm"), timeout=60)
        assert r.status_code == 200 and r.headers["x-seed"] == str(SEED) and r.headers["x-request-id"]
        assert r.content == cli_pcm(TEXT, SEED, TOKENS)
        bad = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Hi.", "top_p": 1.5}, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_p"

        with httpx.stream("POST", f"{server.url}/v1/audio/speech", timeout=60,
                          json=speech_body(1000, response_format="pcm", n_timesteps=10)) as r:
            assert r.status_code == 200
            pieces = r.iter_raw()
            assert next(pieces)  # audio is flowing; leaving the block closes the connection mid-stream
        wait_for(lambda: metric(server.url, "tts_requests_total", endpoint="speech", outcome="cancelled") == 1,
                 what="the cancelled outcome")
        wait_for(lambda: metric(server.url, "tts_http_streams") == 0, what="the stream to be released")
        # remote: the request stops at the server's next chunk, and the cancel goes out on its connection
        wait_for(lambda: metric(server.url, "tts_engine_requests_total", end="cancelled") == 1, what="the cancel")

        serve.terminate()
        assert serve.wait(30) is not None
        r = httpx.get(f"{server.url}/readyz", timeout=30)
        assert r.status_code == 503 and "no welcome" in r.json()["reason"]
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)
        if server is not None:
            server.stop()
