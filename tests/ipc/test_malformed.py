"""Malformed input of every sort yields one typed ProtocolError: never a crash, never an unpickle."""
import pickle

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc import framing
from ipc.schema import PROTOCOL_VERSION, Audio, Info, Mel, ProtocolError, Request, Tokens


def good_mel_frames():
    return framing.encode(Mel(rid="r", seq=0, start=0, mel=np.zeros((80, 4), np.float32)))


def header_of(frames):
    return msgpack.unpackb(frames[0], raw=False)


def with_header(frames, **changes):
    h = header_of(frames)
    for k, v in changes.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    return [msgpack.packb(h, use_bin_type=True), *frames[1:]]


@given(st.lists(st.binary(max_size=256), min_size=0, max_size=4))
@settings(max_examples=300, deadline=None)
def test_random_bytes_give_protocol_error(frames):
    try:
        framing.decode(frames)
    except ProtocolError:
        pass  # the only acceptable failure
    # (random bytes essentially never form a valid message; if they do, decoding succeeded cleanly)


@given(st.integers(min_value=0, max_value=200))
@settings(max_examples=60, deadline=None)
def test_truncated_frames_give_protocol_error(cut):
    frames = good_mel_frames()
    head, body = bytes(frames[0]), bytes(frames[1])
    if cut < len(head):
        bad = [head[:cut], body]
    else:
        bad = [head, body[: max(0, len(body) - 1 - (cut - len(head)))]]
    with pytest.raises(ProtocolError):
        framing.decode(bad)


CASES = {
    "unknown kind": lambda f: with_header(f, kind="nonsense"),
    "future version": lambda f: with_header(f, v=PROTOCOL_VERSION + 1),
    "missing version": lambda f: with_header(f, v=None),
    "missing rid": lambda f: with_header(f, rid=None),
    "missing start": lambda f: with_header(f, start=None),
    "negative start": lambda f: with_header(f, start=-1),
    "bool seq": lambda f: with_header(f, seq=True),
    "nan ts": lambda f: with_header(f, ts=float("nan")),
    "unknown field": lambda f: with_header(f, extra=1),
    "wrong frame count (extra)": lambda f: [*f, b"xx"],
    "wrong frame count (missing)": lambda f: f[:1],
    "byte length mismatch": lambda f: [f[0], bytes(f[1])[:-4]],
    "wrong shape rank": lambda f: with_header(f, tensors=[{"name": "mel", "dtype": "float32", "shape": [320]}]),
    "wrong mel bins": lambda f: with_header(f, tensors=[{"name": "mel", "dtype": "float32", "shape": [40, 8]}]),
    "disallowed dtype": lambda f: with_header(f, tensors=[{"name": "mel", "dtype": "object", "shape": [80, 4]}]),
    "complex dtype": lambda f: with_header(f, tensors=[{"name": "mel", "dtype": "complex64", "shape": [80, 2]}]),
    "descriptor not a map": lambda f: with_header(f, tensors=["mel"]),
    "header not a map": lambda f: [msgpack.packb([1, 2, 3]), *f[1:]],
    "msgpack ext type": lambda f: [msgpack.packb(msgpack.ExtType(5, b"x")), *f[1:]],
    "pickle in header": lambda f: [pickle.dumps({"v": 1, "kind": "mel"}), *f[1:]],
    "trailing garbage": lambda f: [bytes(f[0]) + b"\x00", f[1]],
    "empty message": lambda f: [],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_table(name):
    with pytest.raises(ProtocolError):
        framing.decode(CASES[name](good_mel_frames()))


def test_oversize_frame_is_refused(monkeypatch):
    monkeypatch.setattr(framing, "MAX_FRAME_BYTES", 1024)
    frames = framing.encode(Audio(rid="r", seq=0, start=0, sample_rate=24000, pcm=np.zeros(100, np.float32)))
    big = with_header(frames, tensors=[{"name": "pcm", "dtype": "float32", "shape": [1000]}])
    big[1] = bytes(4000)
    with pytest.raises(ProtocolError, match="over the limit"):
        framing.decode(big)
    with pytest.raises(ProtocolError, match="over the frame limit"):
        framing.encode(Audio(rid="r", seq=0, start=0, sample_rate=24000, pcm=np.zeros(1000, np.float32)))


def test_oversize_header_is_refused():
    frames = framing.encode(Request(rid="r", seq=0, text="a", params={}))
    with pytest.raises(ProtocolError, match="header"):
        framing.decode([b"\x00" * (framing.MAX_HEADER_BYTES + 1)])
    assert isinstance(framing.decode(frames), Request)


@pytest.mark.parametrize(
    "msg",
    [
        lambda: Request(rid="", seq=0, text="x", params={}),
        lambda: Request(rid="r", seq=0, text="x", params={"nested": {"a": 1}}),
        lambda: Tokens(rid="r", seq=0, start=0, ids=np.zeros(3, np.float32)),
        lambda: Mel(rid="r", seq=0, start=0, mel=np.zeros((4, 80), np.float32)),
        lambda: Audio(rid="r", seq=0, start=0, sample_rate=0, pcm=np.zeros(3, np.float32)),
        lambda: Info(rid="r", model=3),
        lambda: Info(rid="r", model="m" * 65),
        lambda: Info(rid="r", model="turbo", schedule=[("n_timesteps", 2)]),
        lambda: Info(rid="r", model="turbo", schedule={"n_timesteps": [2]}),
    ],
)
def test_encoder_refuses_invalid_messages(msg):
    with pytest.raises(ProtocolError):
        framing.encode(msg())
