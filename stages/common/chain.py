"""The shape shared by the stages fed by another stage (CFM, HiFiGAN): per-request streams, errors passed down the chain.

A subclass says what to do with a request's start, its data messages and its end; this
class keeps the bounded per-request map, drops messages of unknown requests, turns any
exception into that request's `error`, and forwards errors and cancels.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ipc.schema import Cancel, End, Error, Message, Request
from stages.common.requests import RequestTable, forward

log = logging.getLogger("tts.stage")


class ChainWorker:
    name = "stage"

    def __init__(self, max_inflight: int):
        self.table: RequestTable = RequestTable(self.name, max_inflight)

    # --- what a stage implements --------------------------------------------------------
    def start(self, req: Request) -> tuple[Any, list[Message]]:
        """New per-request state, and the messages to send (e.g. the request, forwarded)."""
        raise NotImplementedError

    def data(self, msg: Message, state: Any) -> list[Message]:
        raise NotImplementedError

    def end(self, msg: End, state: Any) -> list[Message]:
        """The last chunks and this stage's own end sentinel."""
        raise NotImplementedError

    # --- the shared part --------------------------------------------------------------
    def handle(self, msg: Message) -> list[Message]:
        rid = msg.rid
        if isinstance(msg, (Cancel, Error)):
            return [forward(msg, self.table)]
        try:
            if isinstance(msg, Request):
                state, out = self.start(msg)
                self.table.add(rid, state)
                return [dataclasses.replace(m, seq=self.table.seq(rid)) for m in out]  # our numbering, from 0
            state = self.table.get(rid)
            if state is None:
                log.warning("%s: %s for unknown request %s dropped", self.name, msg.KIND, rid)
                return []
            if isinstance(msg, End):
                out = self.end(msg, state)
                self.table.pop(rid)
                return out
            return self.data(msg, state)
        except Exception as e:  # this request fails; the stage and the other requests carry on
            log.warning("%s: request %s failed: %s", self.name, rid, e)
            return [self.table.error(rid, e)]

    def busy(self) -> bool:
        return False

    def work(self) -> list[Message]:
        return []

    def close(self) -> None:
        self.table.close()
