"""The wire schema: every message kind that crosses a process boundary, declared once and validated on decode.

A message travels as a MessagePack header (frame 0) followed by one raw frame per tensor
(see ipc/framing.py and docs/wire-protocol.md). This module knows the header fields of
each kind, their types and the tensors each kind carries; framing.py knows bytes.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

PROTOCOL_VERSION = 2  # bump on any incompatible change of a header field or frame layout (docs/wire-protocol.md, Changelog)
N_MELS = 80  # mel bins of every mel frame on the wire (Chatterbox's S3Gen mel)
MAX_RID_LEN = 128  # request ids are short identifiers, never payloads
MAX_TEXT_CHARS = 100_000  # far above any sane utterance; keeps a header from carrying a novel
MAX_ERROR_CHARS = 16_384  # an error's `message` on the wire; senders cut theirs well below (ERROR_TEXT_CHARS)
ERROR_TEXT_CHARS = 2_000  # what senders cut an error text to: it may echo a bad value, and must still fit
MAX_NAME_CHARS = 64  # stage names, end reasons and model family names
# Published messages carry a topic frame: the request id's UTF-8 bytes, then this byte. ZeroMQ
# filters by prefix, so subscribing to b"a1\0" can never match request "a10" (rids hold no NUL).
TOPIC_END = b"\x00"
END_REASONS = ("stop", "length", "cancelled")  # the reasons a published end carries

# Scalar types a request parameter may take (no nested containers: parameters are flat).
PARAM_TYPES = (bool, int, float, str, type(None))
# Totals an end sentinel may carry, one per unit a stage counts.
TOTAL_UNITS = ("tokens", "frames", "samples")


class ProtocolError(ValueError):
    """A message could not be decoded or failed validation. Never raised for a valid message."""


def clip(text: str, limit: int = ERROR_TEXT_CHARS) -> str:
    """`text` cut to `limit` characters (with "..." at the cut): error texts may echo a bad value."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: Any, limit: int = 64) -> str:
    """repr(value) for an error text, cut to `limit` characters (a bad value may be huge)."""
    try:
        text = repr(value)
    except Exception:  # a hostile object; values decoded from MessagePack never get here
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


def topic(rid: str) -> bytes:
    """The topic frame of a published message of request `rid` (its id, then TOPIC_END)."""
    return rid.encode() + TOPIC_END


@dataclass(frozen=True)
class TensorSpec:
    """What a tensor frame of one message kind may hold."""

    dtypes: tuple[str, ...]  # numpy dtype names allowed on the wire
    ndim: int
    fixed_dims: Mapping[int, int] = field(default_factory=dict)  # axis -> required size


@dataclass(frozen=True, kw_only=True)
class Message:
    """Fields every message has. `seq` numbers the messages of one request per sender, from 0."""

    KIND: ClassVar[str] = ""
    TENSORS: ClassVar[Mapping[str, TensorSpec]] = {}

    rid: str
    seq: int = 0
    ts: float = field(default_factory=time.time)  # creation time, Unix seconds (latency attribution)


@dataclass(frozen=True, kw_only=True)
class Request(Message):
    """A synthesis request: text plus flat synthesis parameters (validated by the stage that uses them)."""

    KIND: ClassVar[str] = "request"
    text: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Tokens(Message):
    """Speech token ids; `start` is the index of the first one within the request."""

    KIND: ClassVar[str] = "tokens"
    TENSORS: ClassVar[Mapping[str, TensorSpec]] = {"ids": TensorSpec(("int32", "int64"), 1)}
    start: int
    ids: Any  # [n] integer array


@dataclass(frozen=True, kw_only=True)
class Mel(Message):
    """Mel frames [80, n]; `start` is the index of the first frame within the request."""

    KIND: ClassVar[str] = "mel"
    TENSORS: ClassVar[Mapping[str, TensorSpec]] = {"mel": TensorSpec(("float32", "float16"), 2, {0: N_MELS})}
    start: int
    mel: Any  # [80, n] float array
    # Optional CUDA IPC hand-off (ipc/cuda_ipc.py, docs/gpu.md): the frames stay on the sender's GPU and this map
    # of plain values is their handle; `mel` is then empty ([80, 0]). None (the default): the frames are in `mel`.
    cuda: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Audio(Message):
    """Mono PCM samples; `start` is the index of the first sample within the request."""

    KIND: ClassVar[str] = "audio"
    TENSORS: ClassVar[Mapping[str, TensorSpec]] = {"pcm": TensorSpec(("float32", "int16"), 1)}
    start: int
    sample_rate: int
    pcm: Any  # [n] float32 in [-1, 1] or int16


@dataclass(frozen=True, kw_only=True)
class End(Message):
    """End-of-stream sentinel: the final totals, so the next stage can check that nothing was lost."""

    KIND: ClassVar[str] = "end"
    totals: Mapping[str, int]  # subset of TOTAL_UNITS -> count
    reason: str = ""  # why the stream ended ("stop", "length", "cancelled", ...)
    stats: Mapping[str, float] = field(default_factory=dict)  # per-stage timings, e.g. "busy_s.cfm" (benchmarks)


@dataclass(frozen=True, kw_only=True)
class Error(Message):
    """One request failed in `stage`; it travels down the chain and frees the request everywhere."""

    KIND: ClassVar[str] = "error"
    stage: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Cancel(Message):
    """Stop work on a request and free its state."""

    KIND: ClassVar[str] = "cancel"


@dataclass(frozen=True, kw_only=True)
class Ready(Message):
    """A stage process finished loading and warming up (rid is the stage name)."""

    KIND: ClassVar[str] = "ready"
    stage: str
    pid: int
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Accepted(Message):
    """The coordinator accepted a request: the parameters it will run with (seed resolved)."""

    KIND: ClassVar[str] = "accepted"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Welcome(Message):
    """Published on a topic as soon as the publisher sees a subscription to it (rid = the topic, "*" for all).

    A subscriber that has received it knows every later message on that topic reaches it:
    the handshake that replaces sleeping for the slow-joiner problem.
    """

    KIND: ClassVar[str] = "welcome"


@dataclass(frozen=True, kw_only=True)
class Info(Message):
    """What a server runs, for a remote client that validates requests before sending them.

    A client asks with an `info` of its own rid (its fields empty: the server does not read them);
    the coordinator answers on the request socket with the same rid and the fields filled.
    """

    KIND: ClassVar[str] = "info"
    model: str = ""  # the model family, "chatterbox" or "turbo" ("" in the ask)
    schedule: Mapping[str, Any] = field(default_factory=dict)  # the default chunk schedule ({} in the ask)


KINDS: dict[str, type[Message]] = {
    cls.KIND: cls for cls in (Request, Tokens, Mel, Audio, End, Error, Cancel, Ready, Accepted, Welcome, Info)
}

# Header keys every message has, beyond its own fields (see framing.py).
ENVELOPE_KEYS = ("v", "kind", "tensors")


def header_fields(cls: type[Message]) -> dict[str, dataclasses.Field]:
    """The fields of a kind that travel in the header (everything but tensors)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.name not in cls.TENSORS}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _check_str(name: str, v: Any, limit: int) -> None:
    if not isinstance(v, str):
        raise ProtocolError(f"field {name!r} must be a string, got {type(v).__name__}")
    if "\x00" in v and name == "rid":
        raise ProtocolError("field 'rid' must not contain NUL (the topic terminator)")
    if len(v) > limit:
        raise ProtocolError(f"field {name!r} is {len(v)} characters, over the limit of {limit}")


def _check_count(name: str, v: Any) -> None:
    if not _is_int(v) or v < 0:
        raise ProtocolError(f"field {name!r} must be a non-negative integer, got {shown(v)}")


def validate_fields(cls: type[Message], values: Mapping[str, Any]) -> None:
    """Check the header fields of one message (types, ranges). Raises ProtocolError."""
    _check_str("rid", values["rid"], MAX_RID_LEN)
    if not values["rid"]:
        raise ProtocolError("field 'rid' must not be empty")
    _check_count("seq", values["seq"])
    if not _is_num(values["ts"]):
        raise ProtocolError(f"field 'ts' must be a finite number, got {shown(values['ts'])}")
    if "start" in values:
        _check_count("start", values["start"])
    if cls is Request or cls is Accepted:
        if cls is Request:
            _check_str("text", values["text"], MAX_TEXT_CHARS)
        params = values["params"]
        if not isinstance(params, Mapping):
            raise ProtocolError("field 'params' must be a map")
        for k, v in params.items():
            if not isinstance(k, str) or not isinstance(v, PARAM_TYPES):
                raise ProtocolError(f"parameter {shown(k)} must map a name to a scalar, got {type(v).__name__}")
    elif cls is Mel:
        cuda = values["cuda"]
        if cuda is not None and (not isinstance(cuda, Mapping) or any(not isinstance(k, str) for k in cuda)):
            raise ProtocolError("field 'cuda' must be null or a map of named values (a CUDA IPC handle)")
    elif cls is Audio:
        if not _is_int(values["sample_rate"]) or values["sample_rate"] <= 0:
            raise ProtocolError(f"field 'sample_rate' must be a positive integer, got {shown(values['sample_rate'])}")
    elif cls is End:
        totals = values["totals"]
        if not isinstance(totals, Mapping) or not totals:
            raise ProtocolError("field 'totals' must be a non-empty map")
        for unit, n in totals.items():
            if unit not in TOTAL_UNITS:
                raise ProtocolError(f"unknown total {shown(unit)} (expected one of {', '.join(TOTAL_UNITS)})")
            _check_count(f"totals.{unit}", n)
        _check_str("reason", values["reason"], MAX_NAME_CHARS)
        stats = values["stats"]
        if not isinstance(stats, Mapping) or any(not isinstance(k, str) or not _is_num(v) for k, v in stats.items()):
            raise ProtocolError("field 'stats' must map names to finite numbers")
    elif cls is Error:
        _check_str("stage", values["stage"], MAX_NAME_CHARS)
        _check_str("message", values["message"], MAX_ERROR_CHARS)
    elif cls is Ready:
        _check_str("stage", values["stage"], MAX_NAME_CHARS)
        if not _is_int(values["pid"]):
            raise ProtocolError("field 'pid' must be an integer")
        if not isinstance(values["info"], Mapping):
            raise ProtocolError("field 'info' must be a map")
    elif cls is Info:
        _check_str("model", values["model"], MAX_NAME_CHARS)
        schedule = values["schedule"]
        if not isinstance(schedule, Mapping):
            raise ProtocolError("field 'schedule' must be a map")
        for k, v in schedule.items():
            if not isinstance(k, str) or not isinstance(v, PARAM_TYPES):
                raise ProtocolError(f"schedule knob {shown(k)} must map a name to a scalar, got {type(v).__name__}")


def validate_array(cls: type[Message], name: str, dtype: str, shape: tuple[int, ...]) -> None:
    """Check a tensor's declared dtype and shape against its kind's spec. Raises ProtocolError."""
    spec = cls.TENSORS[name]
    if dtype not in spec.dtypes:
        raise ProtocolError(f"{cls.KIND}.{name}: dtype {shown(dtype)} not allowed (allowed: {', '.join(spec.dtypes)})")
    if len(shape) != spec.ndim:
        raise ProtocolError(f"{cls.KIND}.{name}: expected {spec.ndim} dimensions, got shape {shown(list(shape))}")
    if any(not _is_int(d) or d < 0 for d in shape):
        raise ProtocolError(f"{cls.KIND}.{name}: bad shape {shown(list(shape))}")
    for axis, size in spec.fixed_dims.items():
        if shape[axis] != size:
            raise ProtocolError(f"{cls.KIND}.{name}: axis {axis} must be {size}, got shape {list(shape)}")


def wire_dtype(arr: np.ndarray) -> str:
    """The dtype name a numpy array travels under (little-endian native names)."""
    return np.dtype(arr.dtype).name
