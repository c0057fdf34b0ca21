"""The ASGI app (FastAPI) of `tts-pipeline http`: OpenAI's speech endpoint, a WebSocket stream, health, metrics, a demo page.

create_app(backend) is all a server needs (server.py runs it on uvicorn); the backend is
started by the app's lifespan and closed with it. Endpoints, fields and errors: docs/http.md.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.http import voices
from pipeline.http.encoders import MEDIA_TYPES, Encoder, available_formats
from pipeline.http.limits import DEFAULT_MAX_STREAMS, MAX_BODY_BYTES, Slots
from pipeline.http.metrics import Metrics
from pipeline.http.responses import SpeechResponse, StreamAborted, error_response, refusal_outcome
from pipeline.http.schema import MAX_INPUT_CHARS, ApiError, parse_json, prepare, validate_body
from pipeline.http.streaming import RequestRun

STATIC = Path(__file__).resolve().parent / "static"
CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
RETRY_AFTER_S = 1  # a TTS request lasts seconds: a client refused for load may try again this soon
log = logging.getLogger("tts.http")


@dataclass(frozen=True)
class ServerSettings:
    max_streams: int = DEFAULT_MAX_STREAMS
    max_body_bytes: int = MAX_BODY_BYTES
    max_input_chars: int = MAX_INPUT_CHARS
    retry_after_s: int = RETRY_AFTER_S


class Context:
    """What every endpoint shares: the backend, the limits and the metrics."""

    def __init__(self, backend, settings: ServerSettings):
        self.backend, self.settings = backend, settings
        self.metrics = Metrics(backend.status)
        self.slots = Slots(settings.max_streams)
        self.formats = available_formats()
        self.created = int(time.time())

    def admit(self, endpoint: str) -> ApiError | None:
        """None when a synthesis may start now, else the 503 it gets (counted)."""
        st = self.backend.status()
        if not st.ready and not self.backend.remote:  # remote: the last probe may be stale; the request tries
            self.metrics.requests.labels(endpoint, "unavailable").inc()
            return ApiError(503, f"not ready: {st.reason}", code="not_ready")
        if not self.slots.try_acquire():
            self.metrics.requests.labels(endpoint, "busy").inc()
            return ApiError(503, f"server busy: {self.slots.limit} synthesis streams running "
                                 "(tts-pipeline http --max-streams)", code="busy")
        return None

    def run(self, prepared, endpoint: str) -> RequestRun:
        """Start an admitted request (its slot is released when it finishes)."""
        encoder = Encoder(prepared.fmt, prepared.streaming)
        return RequestRun(self.backend, prepared.text, prepared.params, encoder, self.metrics, endpoint,
                          release=self.slots.release).start()

    async def served(self):
        """What the pipeline runs (backend.Served). A remote server not reached yet is asked first; 503 when it
        does not answer (its model family decides how a request is validated, so nothing is guessed)."""
        served = self.backend.served()
        if served is None and self.backend.remote:
            await asyncio.to_thread(self.backend.probe)
            served = self.backend.served()
        if served is None:
            raise ApiError(503, f"not ready: {self.backend.status().reason}", code="not_ready")
        return served

    def model_card(self, served) -> dict:
        """OpenAI's model object, plus what this server runs: its family, description and the defaults of its knobs."""
        from stages.common.params import SAMPLING

        sampling = {f.name: f.default for f in dataclasses.fields(SAMPLING[served.kind])}
        return {"id": voices.model_id(served.kind), "object": "model", "created": self.created,
                "owned_by": "resemble-ai", "aliases": voices.model_aliases(served.kind), **self.backend.describe(),
                "sampling_defaults": sampling, "schedule_defaults": served.schedule.to_dict()}


def create_app(backend, settings: ServerSettings = ServerSettings(),
               announce: Callable[[str], None] = log.warning, on_fatal: Callable[[], None] = lambda: None) -> FastAPI:
    """The app; `announce` gets the "ready" / failure lines, `on_fatal` is called when the backend cannot start."""
    ctx = Context(backend, settings)

    async def report_start() -> None:
        error = await asyncio.to_thread(backend.wait_started)
        if error is not None:
            announce(f"error: the pipeline failed to start: {error}")
            on_fatal()
        else:
            announce(f"ready: {backend.describe()['description']}")

    @asynccontextmanager
    async def lifespan(app):
        backend.start()
        reporter = asyncio.create_task(report_start())
        try:
            yield
        finally:
            reporter.cancel()
            await asyncio.to_thread(backend.close)

    app = FastAPI(title="Chatterbox streaming TTS", lifespan=lifespan, max_body_size=settings.max_body_bytes,
                  docs_url=None, redoc_url=None)  # the docs pages load scripts from a CDN
    app.state.ctx = ctx

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):  # 404, 405, and 413 for a body over max_body_bytes
        message = (f"request body is over the limit of {settings.max_body_bytes} bytes" if exc.status_code == 413
                   else str(exc.detail))
        return JSONResponse(ApiError(exc.status_code, message, code=CODES.get(exc.status_code)).body(),
                            status_code=exc.status_code)

    @app.exception_handler(ApiError)
    async def api_error(request, exc):  # raised by an endpoint that has no error path of its own (ctx.served)
        return error_response(exc, settings.retry_after_s)

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # logged with its traceback here; the client gets no trace
        if not isinstance(exc, StreamAborted):  # a stream cut off on purpose: server.py logs it in one line
            log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return JSONResponse(ApiError(500, "internal error (see the server's log)", code="internal_error").body(),
                            status_code=500)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        st = await asyncio.to_thread(backend.probe) if backend.remote else backend.status()
        served = backend.served()  # (remote: known once a probe reached the server)
        body = {"ready": st.ready, "reason": st.reason, "model": voices.model_id(served.kind) if served else None,
                "active": st.active, "queued": st.queued,
                "stages": {k: {"alive": v.alive, "restarts": v.restarts, "state": v.state} for k, v in st.stages.items()},
                "streams": ctx.slots.used}
        headers = None if st.ready else {"Retry-After": str(settings.retry_after_s)}
        return JSONResponse(body, status_code=200 if st.ready else 503, headers=headers)

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [ctx.model_card(await ctx.served())]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        served = await ctx.served()
        try:
            voices.check_model(model_id, served.kind)
        except voices.UnknownName:
            raise StarletteHTTPException(404, f"model {model_id!r} not found; available: "
                                              f"{voices.model_id(served.kind)}") from None
        return ctx.model_card(served)

    @app.get("/v1/audio/voices")
    async def list_voices():
        return {"voices": voices.list_voices(getattr(backend, "voices_dir", None)), "default": voices.DEFAULT_VOICE}

    @app.post("/v1/audio/speech")
    async def speech(request: Request):
        try:
            body = validate_body(parse_json(await request.body()))
            prepared = prepare(body, ctx.formats, await ctx.served(), settings.max_input_chars,
                               getattr(backend, "voices_dir", None))
        except ApiError as e:
            ctx.metrics.requests.labels("speech", refusal_outcome(e)).inc()
            return error_response(e, settings.retry_after_s)
        refused = ctx.admit("speech")
        if refused is not None:
            return error_response(refused, settings.retry_after_s)
        run = ctx.run(prepared, "speech")
        return SpeechResponse(run, prepared.streaming, MEDIA_TYPES[prepared.fmt], prepared.params["seed"],
                              settings.retry_after_s)

    @app.websocket("/v1/audio/stream")
    async def stream(ws: WebSocket):
        from pipeline.http.websocket import serve_websocket

        await serve_websocket(ws, ctx)

    return app
