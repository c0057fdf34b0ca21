"""Framing: a Message <-> a list of ZeroMQ frames (MessagePack header + one raw frame per tensor).

Tensors are sent without copying (`copy=False`) and received as numpy views on the
frame's own buffer. CPU torch tensors and numpy arrays both encode; a CUDA tensor is
synchronised and copied to host memory first (`.cpu()`), bfloat16 is widened to float32
(numpy has no bfloat16). Nothing here ever unpickles: the header is MessagePack with
extension types refused, and tensor frames are raw little-endian bytes.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any, Mapping, Sequence

import msgpack
import numpy as np

from ipc.schema import (
    KINDS,
    PROTOCOL_VERSION,
    TOPIC_END,
    Message,
    ProtocolError,
    Welcome,
    header_fields,
    shown,
    validate_array,
    validate_fields,
    wire_dtype,
)

MAX_HEADER_BYTES = 1 << 20  # 1 MiB: headers carry ids, text and parameters, never bulk data
MAX_FRAME_BYTES = 64 << 20  # 64 MiB: ~11 min of float32 24 kHz audio in one frame, far above any chunk
assert sys.byteorder == "little", "the wire is little-endian and we send native buffers"


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"MessagePack extension type {code} is not allowed in a header")


def _to_numpy(value: Any) -> np.ndarray:
    """A C-contiguous host array for a numpy array or torch tensor (CUDA -> synchronised host copy)."""
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but the wire does not need it
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()  # numpy has no bfloat16; documented in docs/wire-protocol.md
        return np.ascontiguousarray(t.cpu().numpy())  # .cpu() on a CUDA tensor synchronises its stream
    raise TypeError(f"expected a numpy array or torch tensor, got {type(value).__name__}")


def encode(msg: Message) -> list[Any]:
    """Frames for `msg`: [header, *tensor buffers]. Buffers are memoryviews (no copy)."""
    cls = type(msg)
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": cls.KIND}
    for name in header_fields(cls):
        value = getattr(msg, name)
        header[name] = dict(value) if isinstance(value, Mapping) else value
    validate_fields(cls, header)
    buffers, descs = [], []
    for name in cls.TENSORS:
        arr = _to_numpy(getattr(msg, name))
        dtype = wire_dtype(arr)
        validate_array(cls, name, dtype, arr.shape)
        if arr.nbytes > MAX_FRAME_BYTES:
            raise ProtocolError(f"{cls.KIND}.{name}: {arr.nbytes} bytes is over the frame limit of {MAX_FRAME_BYTES}")
        descs.append({"name": name, "dtype": dtype, "shape": list(arr.shape)})
        buffers.append(memoryview(arr).cast("B") if arr.nbytes else b"")
    header["tensors"] = descs
    return [msgpack.packb(header, use_bin_type=True), *buffers]


def _frame_bytes(frame: Any) -> memoryview:
    """A byte view of a zmq.Frame, bytes or memoryview, without copying."""
    buf = getattr(frame, "buffer", frame)
    view = memoryview(buf)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def decode(frames: Sequence[Any]) -> Message:
    """Parse and validate frames into a Message. Any defect raises ProtocolError (never another error)."""
    if not frames:
        raise ProtocolError("empty message")
    head = _frame_bytes(frames[0])
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(head)} bytes is over the limit of {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(head, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except ProtocolError:
        raise
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise ProtocolError(f"header is not valid MessagePack ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a map, got {type(header).__name__}")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {shown(version)} (this side speaks {PROTOCOL_VERSION})")
    kind = header.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message kind {shown(kind)}")

    values: dict[str, Any] = {}
    for name in (*header_fields(cls), "tensors"):  # every header field is required on the wire, `tensors` too
        if name not in header:
            raise ProtocolError(f"{kind}: missing field {name!r}")
        values[name] = header[name]
    unknown = set(header) - set(values) - {"v", "kind"}
    if unknown:
        raise ProtocolError(f"{kind}: unknown field(s) {shown(', '.join(sorted(map(str, unknown))), 200)}")
    descs = values.pop("tensors")
    validate_fields(cls, values)

    if not isinstance(descs, list) or len(descs) != len(cls.TENSORS):
        raise ProtocolError(f"{kind}: expected {len(cls.TENSORS)} tensor descriptor(s)")
    if len(frames) != 1 + len(cls.TENSORS):
        raise ProtocolError(f"{kind}: expected {1 + len(cls.TENSORS)} frame(s), got {len(frames)}")
    for (name, _), desc, frame in zip(cls.TENSORS.items(), descs, frames[1:]):
        values[name] = _decode_array(cls, name, desc, frame)
    return cls(**values)


def _decode_array(cls: type[Message], name: str, desc: Any, frame: Any) -> np.ndarray:
    if not isinstance(desc, dict) or desc.get("name") != name:
        raise ProtocolError(f"{cls.KIND}: tensor descriptor for {name!r} missing or out of order")
    dtype, shape = desc.get("dtype"), desc.get("shape")
    if not isinstance(dtype, str) or not isinstance(shape, list):
        raise ProtocolError(f"{cls.KIND}.{name}: descriptor needs a dtype string and a shape list")
    validate_array(cls, name, dtype, tuple(shape))
    buf = _frame_bytes(frame)
    if len(buf) > MAX_FRAME_BYTES:
        raise ProtocolError(f"{cls.KIND}.{name}: frame of {len(buf)} bytes is over the limit of {MAX_FRAME_BYTES}")
    itemsize = np.dtype(dtype).itemsize
    expected = itemsize * int(np.prod(shape, dtype=np.int64))
    if len(buf) != expected:
        raise ProtocolError(f"{cls.KIND}.{name}: frame has {len(buf)} bytes, dtype {dtype} x shape {shape} needs {expected}")
    return np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)  # a view, no copy


def as_torch(arr: np.ndarray):
    """A torch tensor sharing a decoded array's memory (read-only: clone before writing in place)."""
    import torch

    with warnings.catch_warnings():  # frame buffers are read-only; torch warns once about that
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def send(sock: Any, msg: Message, flags: int = 0, topic: bytes | None = None) -> None:
    """Encode and send one message (with a leading topic frame on PUB sockets: `schema.topic(rid)`)."""
    frames = encode(msg)
    if topic is not None:
        frames.insert(0, topic)
    sock.send_multipart(frames, flags=flags, copy=False)


def recv(sock: Any, flags: int = 0) -> Message:
    """Receive and decode one message without copying its tensor frames."""
    return decode(sock.recv_multipart(flags=flags, copy=False))


def recv_published(sock: Any, flags: int = 0) -> tuple[bytes, Message]:
    """Receive one message from a SUB socket: (topic, message).

    The topic must be the message's rid followed by TOPIC_END; a `welcome`'s topic is the
    subscription it answers, byte for byte (so it reaches that subscriber whatever it subscribed to).
    """
    frames = sock.recv_multipart(flags=flags, copy=False)
    if len(frames) < 2:
        raise ProtocolError("published message needs a topic frame and a header frame")
    topic = bytes(_frame_bytes(frames[0]))
    msg = decode(frames[1:])
    if not isinstance(msg, Welcome) and topic != msg.rid.encode() + TOPIC_END:
        raise ProtocolError(f"topic {shown(topic)} does not match request id {shown(msg.rid)}")
    return topic, msg
