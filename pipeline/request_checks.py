"""What the coordinator checks of a client's request before admitting it, and the errors it answers with.

The request's text, a client-chosen id, the rid of a message too damaged to decode, and the
`error` replies (clipped to the schema's string limit), plus the errors the Python API raises.
"""
from __future__ import annotations

import re
import uuid
from typing import Any

import msgpack

from ipc import framing
from ipc.schema import MAX_RID_LEN, MAX_TEXT_CHARS, Error, clip

RID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # client-chosen ids: safe as topics and in logs
UNREADABLE_RID = "?"  # the rid of an error reply to a message whose rid could not be read (no valid id has it)


class RequestError(RuntimeError):
    """A request failed; the message names the stage and the reason."""


class ServerBusy(RequestError):
    """The admission limit is reached: max_inflight active and max_queue queued requests (retry later)."""


def busy_text(held: int, max_inflight: int, max_queue: int) -> str:
    """The busy error's text; the HTTP layer matches its "server busy" prefix (pipeline/http/backend.py BUSY_PATTERN)."""
    active = min(held, max_inflight)
    return (f"server busy: {active} active, {held - active} queued "
            f"(limits: --max-inflight {max_inflight}, --max-queue {max_queue}); retry later")


def new_request_id() -> str:
    """32 hex characters: unique, and safe as a topic."""
    return uuid.uuid4().hex


def check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty or whitespace only")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(text)} characters, over the limit of {MAX_TEXT_CHARS} (split it into sentences)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: it cannot travel (UTF-8 on the wire)
        raise ValueError(f"text is not valid Unicode: {e.object[e.start:e.end]!r} at position {e.start} "
                         "(a lone surrogate) cannot be encoded") from None
    return text


def readable_rid(frames: list[Any]) -> str:
    """The rid of a message that failed to decode, if its header still says one, else UNREADABLE_RID."""
    try:
        head = frames[0]
        head = bytes(getattr(head, "buffer", head))
        if len(head) <= framing.MAX_HEADER_BYTES:
            header = msgpack.unpackb(head, raw=False, strict_map_key=False, ext_hook=lambda code, data: None)
            rid = header.get("rid") if isinstance(header, dict) else None
            if isinstance(rid, str) and 0 < len(rid) <= MAX_RID_LEN and "\x00" not in rid:
                return rid
    except Exception:  # anything unreadable has no rid to echo
        pass
    return UNREADABLE_RID


def error_reply(rid: str, message: str, stage: str = "coordinator") -> Error:
    return Error(rid=rid, stage=stage, message=clip(message))
