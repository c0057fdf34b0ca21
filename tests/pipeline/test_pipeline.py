"""The multi-process pipeline through its Python API, its subscribers and remote clients (built-in tiny model)."""
import threading

import numpy as np
import pytest
import torch

from ipc.endpoints import RunDir  # noqa: F401  (the run dir type the pipeline uses)
from ipc.schema import Audio, End
from ipc.sockets import SocketFactory
from pipeline.client import RemoteClient, RemoteError, Subscription
from pipeline.coordinator import RequestError
from pipeline.models import ModelSpec
from pipeline.sequential import Engine

from .conftest import FAST

PARAMS = {"seed": 11, "ignore_eos": True, "max_new_tokens": 30, **FAST}


def test_stream_yields_exactly_960_samples_per_token(tts):
    for n in (1, 2, 9):
        chunks = list(tts.stream("Count me.", **{**PARAMS, "max_new_tokens": n}))
        assert [c.start for c in chunks] == list(np.cumsum([0] + [c.pcm.size for c in chunks[:-1]]))
        assert sum(c.pcm.size for c in chunks) == 960 * n
    assert tts.synthesize("Count me.", **PARAMS).size == 960 * 30


def test_multiprocess_equals_sequential(tts):
    torch.set_num_threads(1)  # the stage processes run 1 thread each
    engine = Engine(ModelSpec())
    seq = torch.cat([c.pcm for c in engine.stream("Same audio?", PARAMS)]).numpy()
    mp = tts.synthesize("Same audio?", **PARAMS)
    assert mp.tobytes() == seq.tobytes()


def test_concurrent_requests_equal_each_alone(tts):
    alone = tts.synthesize("Alone or not.", **PARAMS)
    texts = ["Alone or not.", "Another one here.", "A third, longer request of text.", "Four."]
    results = {}

    def consume(i, text):
        results[i] = tts.synthesize(text, **{**PARAMS, "seed": 11 + 100 * i})

    threads = [threading.Thread(target=consume, args=(i, t)) for i, t in enumerate(texts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results[0].tobytes() == alone.tobytes()
    assert all(results[i].size == 960 * 30 for i in range(4))


def test_subscriber_gets_every_chunk_in_order(tts):
    rid = "sub-test-1"
    with SocketFactory() as sockets:
        sub = Subscription(sockets, tts.endpoints["pub"], rid)  # subscribed and welcomed before submitting
        direct = [c.pcm for c in tts.stream("Published words.", rid=rid, **PARAMS)]
        got = []
        for msg in sub.messages(timeout_ms=10_000):
            got.append(msg)
            if isinstance(msg, End):
                break
    audio = [m for m in got if isinstance(m, Audio)]
    assert [m.seq for m in got] == list(range(len(got)))
    assert np.concatenate([m.pcm for m in audio]).tobytes() == np.concatenate(direct).tobytes()
    assert got[-1].totals["samples"] == 960 * 30


def test_late_subscriber_with_request_id_gets_everything(tts):
    handle = tts.submit("Late joiner.", **PARAMS)
    direct = np.concatenate([c.pcm for c in handle.chunks()])
    with SocketFactory() as sockets:  # subscribe after the request has finished: it is re-published
        sub = Subscription(sockets, tts.endpoints["pub"], handle.rid)
        audio = []
        for msg in sub.messages(timeout_ms=10_000):
            if isinstance(msg, Audio):
                audio.append(msg.pcm)
            if isinstance(msg, End):
                break
    assert np.concatenate(audio).tobytes() == direct.tobytes()


def test_bad_input_fails_alone_and_the_pipeline_carries_on(tts):
    with pytest.raises(ValueError, match="temperature"):
        tts.stream("Hi.", temperature=-1)
    with pytest.raises(ValueError, match="empty"):
        tts.stream("  ")
    with pytest.raises(RequestError, match="too long"):
        list(tts.stream("x" * 3000, longform=False, **FAST))  # not segmented: over T3's text table, refused before any audio
    assert tts.synthesize("Still fine.", **PARAMS).size == 960 * 30


def test_closing_a_stream_early_cancels_it(tts):
    it = tts.stream("Cancel me.", **{**PARAMS, "max_new_tokens": 200})
    next(it)
    it.close()
    assert tts.synthesize("After cancel.", **PARAMS).size == 960 * 30


def test_remote_client_and_bad_remote_request(tts):
    eps = tts.endpoints
    with RemoteClient(eps["requests"], eps["pub"]) as client:
        with pytest.raises(RemoteError, match="top_p"):
            list(client.stream("Bad.", top_p=2.0))
        pcm = np.concatenate([m.pcm for m in client.stream("Remote words.", **PARAMS)])
    assert pcm.tobytes() == tts.synthesize("Remote words.", **PARAMS).tobytes()
