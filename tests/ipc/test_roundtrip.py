"""Every message kind survives encode -> PUSH -> PULL -> decode on ipc:// and tcp://, tensors without a copy."""
import numpy as np
import pytest
import torch
import zmq

from ipc import framing
from ipc.endpoints import Endpoints
from ipc.schema import Accepted, Audio, Cancel, End, Error, Info, Mel, Ready, Request, Tokens, Welcome, topic
from ipc.sockets import SocketFactory

RECV_TIMEOUT_MS = 5000  # a lost message fails the test instead of hanging it


def sample_messages():
    rng = np.random.default_rng(0)
    return [
        Request(rid="r1", seq=0, text="Hello, wörld!", params={"temperature": 0.8, "seed": 3, "ignore_eos": True, "voice": None}),
        Tokens(rid="r1", seq=1, start=5, ids=np.array([1, 2, 6560], dtype=np.int64)),
        Tokens(rid="r1", seq=2, start=8, ids=torch.tensor([7, 8], dtype=torch.int32)),
        Mel(rid="r1", seq=3, start=10, mel=rng.standard_normal((80, 6)).astype(np.float32)),
        Mel(rid="r1", seq=4, start=16, mel=torch.randn(80, 3, dtype=torch.bfloat16)),
        Audio(rid="r1", seq=5, start=960, sample_rate=24000, pcm=rng.standard_normal(960).astype(np.float32)),
        Audio(rid="r1", seq=6, start=0, sample_rate=24000, pcm=np.zeros(0, dtype=np.int16)),
        End(rid="r1", seq=7, totals={"tokens": 3, "frames": 6, "samples": 2880}, reason="stop", stats={"busy_s.t3": 0.5}),
        Error(rid="r1", seq=8, stage="cfm", message="bad thing"),
        Cancel(rid="r1", seq=9),
        Ready(rid="t3", seq=0, stage="t3", pid=123, info={"preset": "tiny"}),
        Accepted(rid="r1", seq=0, params={"seed": 42}),
        Welcome(rid="*", seq=0),
        Info(rid="ask1", seq=0),  # a client's ask: empty fields
        Info(rid="ask1", seq=0, model="turbo", schedule={"n_timesteps": 2, "first_chunk_timesteps": None, "growth": 2.0,
                                                        "left_context_tokens": "all"}),
    ]


def assert_same(sent, got):
    assert type(got) is type(sent)
    for name in framing.header_fields(type(sent)):
        a, b = getattr(sent, name), getattr(got, name)
        assert (dict(a) if hasattr(a, "items") else a) == (dict(b) if hasattr(b, "items") else b), name
    for name in type(sent).TENSORS:
        want = getattr(sent, name)
        want = want.float().numpy() if isinstance(want, torch.Tensor) and want.dtype == torch.bfloat16 else np.asarray(want)
        np.testing.assert_array_equal(getattr(got, name), want)
        assert getattr(got, name).dtype == want.dtype


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_every_kind_round_trips_over_push_pull(transport):
    with SocketFactory(Endpoints(transport)) as f:
        pull = f.socket("PULL", f.endpoint("link"), RCVTIMEO=RECV_TIMEOUT_MS)
        push = f.socket("PUSH", f.bound_address(pull))
        msgs = sample_messages()
        for m in msgs:
            framing.send(push, m)
        for m in msgs:
            assert_same(m, framing.recv(pull))


def test_large_tensor_is_received_without_copy():
    with SocketFactory(Endpoints("ipc")) as f:
        pull = f.socket("PULL", f.endpoint("big"), RCVTIMEO=RECV_TIMEOUT_MS)
        push = f.socket("PUSH", f.bound_address(pull))
        pcm = np.random.default_rng(1).standard_normal(1 << 18).astype(np.float32)  # 1 MiB
        framing.send(push, Audio(rid="r", seq=0, start=0, sample_rate=24000, pcm=pcm))
        frames = pull.recv_multipart(copy=False)
        msg = framing.decode(frames)
        frame_addr = np.frombuffer(frames[1].buffer, dtype=np.uint8).ctypes.data
        assert msg.pcm.ctypes.data == frame_addr  # the array's memory is the frame's buffer
        assert not msg.pcm.flags.owndata
        np.testing.assert_array_equal(msg.pcm, pcm)
        t = framing.as_torch(msg.pcm)
        assert t.data_ptr() == frame_addr


def test_pub_sub_filters_by_request_id():
    """The topic terminator: a subscriber of "want" never sees "want1" (an id it is a prefix of)."""
    with SocketFactory(Endpoints("ipc")) as f:
        pub = f.socket("PUB", f.endpoint("pub"))
        sub = f.socket("SUB", f.bound_address(pub), RCVTIMEO=RECV_TIMEOUT_MS)
        sub.setsockopt(zmq.SUBSCRIBE, topic("want"))
        # Slow joiner: publish probes until the subscription has reached the publisher.
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        while True:
            framing.send(pub, Cancel(rid="want", seq=0), topic=topic("want"))
            if poller.poll(50):
                framing.recv_published(sub)
                break
        for i in range(5):
            framing.send(pub, Audio(rid="want1", seq=i, start=0, sample_rate=24000, pcm=np.ones(4, np.float32)), topic=topic("want1"))
            framing.send(pub, Audio(rid="want", seq=i, start=4 * i, sample_rate=24000, pcm=np.full(4, i, np.float32)), topic=topic("want"))
        got = [framing.recv_published(sub) for _ in range(5)]
        assert [m.rid for _, m in got] == ["want"] * 5
        assert [m.seq for _, m in got] == list(range(5))
        assert [float(m.pcm[0]) for _, m in got] == [0.0, 1.0, 2.0, 3.0, 4.0]
        sub.setsockopt(zmq.RCVTIMEO, 100)
        with pytest.raises(zmq.Again):  # nothing of the other request leaked through
            sub.recv_multipart()
