"""Per-request state of a stage: a bounded map keyed by request id, and the stage's outgoing sequence numbers."""
from __future__ import annotations

import dataclasses
from typing import Any, Generic, Iterator, TypeVar

from ipc.schema import Error, Message

S = TypeVar("S")


class CapacityError(RuntimeError):
    """Too many requests in flight in one stage."""


class RequestTable(Generic[S]):
    """rid -> state, at most `limit` entries. `close()` of a state, if it has one, runs when it is removed."""

    def __init__(self, stage: str, limit: int):
        self.stage, self.limit = stage, limit
        self._states: dict[str, S] = {}
        self._seq: dict[str, int] = {}

    def add(self, rid: str, state: S) -> None:
        if rid in self._states:
            raise ValueError(f"request id {rid!r} is already in flight")
        if len(self._states) >= self.limit:
            raise CapacityError(f"{self.stage}: {self.limit} requests already in flight (raise --max-inflight)")
        self._states[rid] = state
        self._seq.setdefault(rid, 0)

    def get(self, rid: str) -> S | None:
        return self._states.get(rid)

    def __contains__(self, rid: str) -> bool:
        return rid in self._states

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._states))

    def seq(self, rid: str) -> int:
        """The next sequence number of this stage's messages for `rid` (counted from 0 per request)."""
        n = self._seq.get(rid, 0)
        self._seq[rid] = n + 1
        return n

    def pop(self, rid: str) -> None:
        """Free a request's state (idempotent)."""
        state = self._states.pop(rid, None)
        self._seq.pop(rid, None)
        close = getattr(state, "close", None)
        if callable(close):
            close()

    def error(self, rid: str, exc: BaseException | str) -> Error:
        """An error message for `rid` from this stage; the request's state is freed."""
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        msg = Error(rid=rid, seq=self.seq(rid), stage=self.stage, message=text)
        self.pop(rid)
        return msg

    def close(self) -> None:
        for rid in list(self._states):
            self.pop(rid)


def forward(msg: Message, table: RequestTable[Any]) -> Message:
    """Pass an error or cancel down the chain, renumbered as this stage's message; frees the request here."""
    out = dataclasses.replace(msg, seq=table.seq(msg.rid))
    table.pop(msg.rid)
    return out
