"""`WS /v1/audio/stream`: requests as JSON text messages in, s16le PCM binary frames out (protocol: docs/http.md).

Requests on one connection run one after another, in the order they came; a bad message
gets an `error` and the connection carries on. Every audio frame follows its `chunk`
header, and both go out under one lock, so no other message can come between them.
Closing the connection cancels the running request in every stage.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from pipeline.http.responses import api_error, refusal_outcome
from pipeline.http.schema import ApiError, parse_json, prepare, validate_body
from pipeline.http.streaming import Cancelled, Chunk, Done, Failed

MAX_PENDING = 16  # requests queued on one connection behind the running one
MAX_ID_CHARS = 64  # client-chosen request labels are short
log = logging.getLogger("tts.http")


class Connection:
    def __init__(self, ws, ctx):
        self.ws, self.ctx = ws, ctx
        self.jobs: asyncio.Queue = asyncio.Queue(MAX_PENDING)
        self.buffer: list[str] = []  # text appended since the last flush
        self.current = None  # the RequestRun running now
        self.count = 0  # requests taken on this connection (default ids)
        self.send_lock = asyncio.Lock()
        self._last_id: str | None = None  # the id of the message being handled (for its error)

    async def serve(self) -> None:
        await self.ws.accept()
        worker = asyncio.create_task(self._work())
        try:
            await self._receive()
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker  # its running request is cancelled on the way out (_run)

    # --- in -----------------------------------------------------------------------------
    async def _receive(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is None:
                await self._error(ApiError(422, "binary messages are not accepted: send JSON text messages",
                                           code="invalid_message"))
                continue
            try:
                await self._on_message(message["text"])
            except ApiError as e:
                self.ctx.metrics.requests.labels("ws", refusal_outcome(e)).inc()
                await self._error(e, self._last_id)

    async def _on_message(self, text: str) -> None:
        self._last_id = None
        data = parse_json(text.encode())
        if not isinstance(data, dict):
            raise ApiError(422, f"a message must be a JSON object, got {type(data).__name__}", code="invalid_message")
        kind = data.pop("type", None)
        rid = data.pop("id", None)
        if rid is not None and (not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS):
            raise ApiError(422, f"id must be a string of 1-{MAX_ID_CHARS} characters", "id", "invalid_value")
        self._last_id = rid
        if kind == "append":
            piece = data.pop("input", None)
            if data or not isinstance(piece, str):
                raise ApiError(422, "append takes one field, input (a string)", "input", "invalid_message")
            if sum(map(len, self.buffer)) + len(piece) > self.ctx.settings.max_input_chars:
                raise ApiError(400, f"appended input is over the limit of {self.ctx.settings.max_input_chars} "
                                    "characters: flush before appending more", "input", "input_too_long")
            self.buffer.append(piece)
            return
        if kind == "cancel":
            if self.current is not None:
                self.current.cancel()
            return
        if kind == "flush":
            if "input" in data:
                raise ApiError(422, "flush takes no input: append it first", "input", "invalid_message")
            data["input"], self.buffer = "".join(self.buffer), []
        elif kind != "request":
            raise ApiError(422, f"type must be one of request, append, flush, cancel; got {kind!r}", "type",
                           "invalid_message")
        data.setdefault("response_format", "pcm")
        body = validate_body(data)
        if body.response_format != "pcm" or body.stream is False:
            raise ApiError(400, "the WebSocket stream sends pcm (s16le, 24 kHz mono) only", "response_format",
                           "unsupported_format")
        prepared = prepare(body, self.ctx.formats, await self.ctx.served(), self.ctx.settings.max_input_chars,
                           getattr(self.ctx.backend, "voices_dir", None))
        self.count += 1
        try:
            self.jobs.put_nowait((rid or str(self.count), prepared))
        except asyncio.QueueFull:
            raise ApiError(503, f"{MAX_PENDING} requests already queued on this connection", code="busy") from None

    # --- out ----------------------------------------------------------------------------
    async def _send(self, head: dict[str, Any], data: bytes | None = None) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(head))
            if data is not None:
                await self.ws.send_bytes(data)

    async def _error(self, err: ApiError, rid: str | None = None) -> None:
        with contextlib.suppress(Exception):  # the client may be gone already
            body = err.body()["error"]
            await self._send({"type": "error", "id": rid, "status": err.status, "message": body["message"],
                              "param": body["param"], "code": body["code"]})

    async def _work(self) -> None:
        while True:
            rid, prepared = await self.jobs.get()
            try:
                await self._run(rid, prepared)
            except Exception as e:  # the client went away mid-send (its request is cancelled); the receiver sees it
                log.info("websocket request %s ended: %s", rid, e)
                return
            finally:
                self.current = None

    async def _run(self, rid: str, prepared) -> None:
        refused = self.ctx.admit("ws")
        if refused is not None:
            await self._error(refused, rid)
            return
        run = self.current = self.ctx.run(prepared, "ws")
        try:
            await self._stream(rid, run, prepared.params["seed"])
        finally:
            run.finish("cancelled")  # a no-op once an outcome is recorded; else the client went away mid-stream

    async def _stream(self, rid: str, run, seed: int) -> None:
        await self._send({"type": "start", "id": rid, "seed": seed, "sample_rate": 24000, "format": "pcm_s16le"})
        while True:
            event = await run.next()
            if isinstance(event, Chunk):
                await self._send({"type": "chunk", "id": rid, "request_id": event.rid, "start": event.start,
                                  "samples": event.samples}, event.data)
            elif isinstance(event, Done):
                run.finish("ok")
                await self._send({"type": "end", "id": rid, "request_id": run.rid, "samples": run.samples,
                                  "cancelled": False})
                return
            elif isinstance(event, Cancelled):
                run.finish("cancelled")
                await self._send({"type": "end", "id": rid, "request_id": run.rid, "samples": run.samples,
                                  "cancelled": True})
                return
            else:
                err, outcome = api_error(event.error)
                run.finish(outcome)
                await self._error(err, rid)
                return


async def serve_websocket(ws, ctx) -> None:
    await Connection(ws, ctx).serve()
