"""The speech response: its status is decided by the request's first event, its body streams the rest.

An ASGI callable rather than Starlette's StreamingResponse, for three reasons:
- the status line waits for the first event, so a request the engine refuses before any
  audio (text too long for the tokenizer, server busy) still gets its 400 or 503;
- it listens for the client's disconnect while it waits for audio, so a client that goes
  away cancels its request in every stage at once, not at the next chunk;
- a synthesis that fails after audio was sent closes the connection without the final
  empty chunk, so the client sees a truncated body (an error), never a short "success".
"""
from __future__ import annotations

import logging

import anyio
from starlette.responses import JSONResponse, Response

from pipeline.http.backend import error_kind
from pipeline.http.schema import ApiError
from pipeline.http.streaming import Cancelled, Chunk, Done, Failed, RequestRun

log = logging.getLogger("tts.http")
# error kind -> (HTTP status, request outcome)
STATUS = {"input": (400, "rejected"), "busy": (503, "busy"), "unavailable": (503, "unavailable"),
          "failed": (500, "error"), "internal": (500, "error")}


class StreamAborted(Exception):
    """The synthesis failed after the response started: the connection is closed without the final chunk."""


def api_error(exc: BaseException) -> tuple[ApiError, str]:
    """A failed request -> (the error the client gets, the outcome for the metrics). Never a stack trace."""
    kind = error_kind(exc)
    status, outcome = STATUS[kind]
    if kind == "internal":
        log.error("request failed", exc_info=exc)
        return ApiError(status, "internal error (see the server's log)", code="internal_error"), outcome
    if kind == "input":
        return ApiError(status, str(exc), "input", "invalid_value"), outcome
    if kind == "failed":
        return ApiError(status, f"synthesis failed: {exc}", code="synthesis_failed"), outcome
    return ApiError(status, str(exc), code=kind), outcome


def refusal_outcome(err: ApiError) -> str:
    """The outcome for the metrics of a request refused before it started: a 503 (a remote server that did not
    say what it runs) is `unavailable`, anything else the client's error, `rejected`."""
    return "unavailable" if err.status == 503 else "rejected"


def error_response(err: ApiError, retry_after_s: int) -> JSONResponse:
    headers = {"Retry-After": str(retry_after_s)} if err.status == 503 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


class SpeechResponse(Response):
    def __init__(self, run: RequestRun, streaming: bool, media_type: str, seed: int, retry_after_s: int):
        super().__init__(media_type=media_type)  # a Response, so FastAPI sends it as it is
        self.run, self.streaming, self.media_type = run, streaming, media_type
        self.seed, self.retry_after_s = seed, retry_after_s

    async def __call__(self, scope, receive, send) -> None:
        failure: BaseException | None = None
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.run.finish("cancelled")  # frees the request in every stage
                tg.cancel_scope.cancel()

            tg.start_soon(watch_disconnect)
            try:
                failure = await self._respond(scope, receive, send)
            finally:
                self.run.finish("error")  # no-op unless an unexpected exception got here first
                tg.cancel_scope.cancel()
        if failure is not None:
            raise StreamAborted(f"request {self.run.rid}: {failure}")  # uvicorn closes the connection

    def _headers(self, length: int | None) -> list[tuple[bytes, bytes]]:
        h = {"content-type": self.media_type, "cache-control": "no-store", "x-seed": str(self.seed),
             "x-sample-rate": "24000", "x-accel-buffering": "no"}  # no buffering in an nginx in front
        if self.run.rid:
            h["x-request-id"] = self.run.rid
        if length is not None:
            h["content-length"] = str(length)
        return [(k.encode(), v.encode()) for k, v in h.items()]

    async def _respond(self, scope, receive, send) -> BaseException | None:
        event = await self.run.next()
        if isinstance(event, (Failed, Cancelled)):  # nothing sent yet: a proper status
            exc = event.error if isinstance(event, Failed) else RuntimeError("the request was cancelled by the server")
            err, outcome = api_error(exc)
            self.run.finish(outcome)
            await error_response(err, self.retry_after_s)(scope, receive, send)
            return None
        if not self.streaming:
            return await self._respond_whole(event, scope, receive, send)
        await send({"type": "http.response.start", "status": 200, "headers": self._headers(None)})
        while True:
            if isinstance(event, Chunk):
                if event.data:
                    await send({"type": "http.response.body", "body": event.data, "more_body": True})
            elif isinstance(event, Done):
                self.run.finish("ok")  # before the last send: once the response is complete, receive() says disconnect
                await send({"type": "http.response.body", "body": event.data, "more_body": False})
                return None
            else:
                self.run.finish("error")
                return event.error if isinstance(event, Failed) else RuntimeError("cancelled by the server")
            event = await self.run.next()

    async def _respond_whole(self, event, scope, receive, send) -> None:
        parts = []
        while isinstance(event, Chunk):
            parts.append(event.data)
            event = await self.run.next()
        if not isinstance(event, Done):
            exc = event.error if isinstance(event, Failed) else RuntimeError("the request was cancelled by the server")
            err, outcome = api_error(exc)
            self.run.finish(outcome)
            await error_response(err, self.retry_after_s)(scope, receive, send)
            return None
        parts.append(event.data)
        body = b"".join(parts)
        self.run.finish("ok")
        await send({"type": "http.response.start", "status": 200, "headers": self._headers(len(body))})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return None
