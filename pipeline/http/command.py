"""The `tts-pipeline http` command (click); pipeline/cli.py adds it to the command group.

Imports nothing of the server extra until it runs, so the CLI works without it and says
what to install. The model options are the CLI's own (`model_options`), minus `--port`
and `--transport`: here `--port` is the HTTP port, and the in-process pipeline always
uses ipc:// (a remote pipeline is `tts-pipeline serve` plus `--connect`).
"""
from __future__ import annotations

import sys
from typing import Callable

import click

DROPPED_MODEL_OPTIONS = ("port", "transport")


def _without(names: tuple[str, ...]):
    """Drop options that an earlier decorator (model_options) put on the function (click keeps them in __click_params__)."""

    def decorate(f):
        f.__click_params__ = [p for p in getattr(f, "__click_params__", []) if p.name not in names]
        return f

    return decorate


def build_command(model_options: Callable, build_config: Callable, fail: Callable[[str], None],
                  say: Callable[[str], None]) -> click.Command:
    from pipeline.http.limits import DEFAULT_MAX_STREAMS

    @click.command("http")
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address to listen on (loopback by default; 0.0.0.0 exposes the server: it has no authentication).")
    @click.option("--port", "http_port", type=int, default=8000, show_default=True, help="HTTP port (0 = a free port).")
    @click.option("--connect", help="Serve a running `tts-pipeline serve` at this request endpoint instead of starting a pipeline.")
    @click.option("--pub", help="The server's publish endpoint (with --connect).")
    @click.option("--max-streams", type=int, default=DEFAULT_MAX_STREAMS, show_default=True,
                  help="Synthesis streams at once (HTTP + WebSocket); past it requests get 503 with Retry-After.")
    @_without(DROPPED_MODEL_OPTIONS)
    @model_options
    def http(host, http_port, connect, pub, max_streams, **kw) -> None:
        """Serve OpenAI's POST /v1/audio/speech, a WebSocket stream, /healthz, /readyz, /metrics and a demo page at /."""
        try:
            import fastapi  # noqa: F401
            import prometheus_client  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as e:
            fail(f"the http command needs the server extra ({e.name} is missing): pip install -e '.[server]' (make setup does)")
        from pipeline.http.app import ServerSettings
        from pipeline.http.backend import LocalBackend, RemoteBackend
        from pipeline.http.server import serve
        from stages.common.weights import CheckpointError

        if not 0 <= http_port <= 65535:
            raise click.BadParameter(f"must be in [0, 65535], got {http_port}", param_hint="--port")
        if max_streams < 1:
            raise click.BadParameter(f"must be >= 1, got {max_streams}", param_hint="--max-streams")
        if bool(connect) != bool(pub):
            raise click.UsageError("--connect and --pub go together (both are printed by `tts-pipeline serve`)")
        if connect:
            backend = RemoteBackend(connect, pub, kw.get("voices_dir"))
        else:
            try:
                config = build_config({**kw, "transport": "ipc", "port": 0})
                config.model.check()
            except (ValueError, CheckpointError) as e:
                fail(str(e))
            backend = LocalBackend(config)
        try:
            code = serve(backend, host, http_port, ServerSettings(max_streams=max_streams), say)
        except OSError as e:
            fail(f"cannot listen on {host}:{http_port}: {e.strerror or e}")
        sys.exit(code)

    return http
