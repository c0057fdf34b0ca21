"""`tts-pipeline http --connect` in front of a running `tts-pipeline serve`: the same bytes, cancels, readiness, and
the served model learned from the server (its `info` answer; a server from before `info` is the base model)."""
import os
import re
import subprocess
import threading

import httpx

from ipc import framing, schema
from ipc.schema import ProtocolError
from ipc.sockets import SocketFactory
from pipeline.client import RemoteClient
from pipeline.request_checks import error_reply, readable_rid

from ..conftest import CLI
from .conftest import SEED, TEXT, TOKENS, TURBO_BYTES, Server, cli_pcm, metric, speech_body, turbo_body, wait_for

REPLY_TIMEOUT_MS = 10_000  # a reply that does not come within this fails the test instead of hanging it


def start_serve(*args: str) -> tuple[subprocess.Popen, dict[str, str]]:
    serve = subprocess.Popen([*CLI, "serve", "--threads", "1", *args], stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
        assert r.status_code == 200 and r.json()["ready"] is True and r.json()["model"] == "chatterbox"
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


def stop(serve: subprocess.Popen, server: Server | None) -> None:
    if serve.poll() is None:
        serve.terminate()
        serve.wait(30)
    if server is not None:
        server.stop()


def test_http_in_front_of_a_turbo_serve_validates_with_turbo_rules():
    serve, eps = start_serve("--preset", "turbo-tiny")
    server = None
    try:
        server = Server("--connect", eps["requests"], "--pub", eps["publish"])
        # the first request finds the model family unknown or just learned: either way it asks the server first
        r = httpx.post(f"{server.url}/v1/audio/speech", json=turbo_body(top_k=50, cfg_weight=0.3), timeout=60)
        assert r.status_code == 200, r.text
        assert len(r.content) == TURBO_BYTES
        r = httpx.post(f"{server.url}/v1/audio/speech", json=turbo_body(model="chatterbox"), timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        card = httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"][0]
        assert card["id"] == "chatterbox-turbo" and card["schedule_defaults"]["n_timesteps"] == 2  # Turbo's default
        assert httpx.get(f"{server.url}/readyz", timeout=30).json()["model"] == "chatterbox-turbo"
    finally:
        stop(serve, server)


def test_a_serve_from_before_info_is_the_base_model(monkeypatch):
    """An older coordinator refuses `info` as it refuses any kind it does not know: with an error reply saying so."""
    monkeypatch.delitem(schema.KINDS, "info")  # what an older coordinator's decoder knows
    with SocketFactory(linger_ms=0) as sockets:
        router = sockets.socket("ROUTER", "tcp://127.0.0.1:*")

        def old_coordinator():  # Coordinator._on_remote's reply to a message it cannot decode
            if router.poll(REPLY_TIMEOUT_MS):
                identity, *frames = router.recv_multipart()
                try:
                    reply = error_reply(framing.decode(frames).rid, "decoded a kind it should not know")
                except ProtocolError as e:
                    reply = error_reply(readable_rid(frames), str(e))
                router.send_multipart([identity, *framing.encode(reply)])

        thread = threading.Thread(target=old_coordinator, daemon=True)
        thread.start()  # the router is used by that thread only from here on
        with RemoteClient(sockets.bound_address(router), "tcp://127.0.0.1:1") as client:
            assert client.info(REPLY_TIMEOUT_MS) is None  # the front end then runs the base model's rules
        thread.join(REPLY_TIMEOUT_MS / 1000)
