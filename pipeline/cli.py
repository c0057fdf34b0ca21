"""The `tts-pipeline` command line (click). Audio goes to stdout or a file; logs and progress go to stderr."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Any

import click

from pipeline.audio_out import FORMATS, SUFFIXES, AudioWriter
from pipeline.cli_common import build_config, check_params, collect_params, fail, log, model_options, param_options
from pipeline.text.plan import DEFAULT_SENTENCE_SILENCE_S

SAMPLE_RATE = 24_000  # Hz


def _terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every context manager stops the stages and removes the run directory."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def package_version() -> str:
    """The engine's version: the checkout's pyproject.toml when run from one, else the installed package's."""
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        return tomllib.loads(pyproject.read_text())["project"]["version"]
    from importlib.metadata import version

    return version("chatterbox-streaming-engine")


def _version_message() -> str:
    from ipc.schema import PROTOCOL_VERSION

    return f"tts-pipeline {package_version()} (wire protocol {PROTOCOL_VERSION})"


def _print_version(ctx, param, value) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_message())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version (and the wire protocol's) and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def main(verbose: bool) -> None:
    """Streaming Chatterbox text-to-speech: T3 -> CFM -> HiFiGAN over ZeroMQ."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if verbose:
        os.environ["TTS_LOG_LEVEL"] = "INFO"  # the stage processes inherit it


@main.command()
@click.argument("text", nargs=-1)
@click.option("--text-file", type=click.Path(exists=True, dir_okay=False), help="Read utterances from a file, one per line.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Raw samples (s16le, the default on stdout; f32le) or a container (wav, flac, ogg, opus, mp3).")
@click.option("--output-file", "-o", help="Write a file (.wav .flac .ogg .opus .mp3 .raw); '-' = stdout.")
@click.option("--sentence-silence", type=float, default=DEFAULT_SENTENCE_SILENCE_S, show_default=True,
              help="Seconds of silence between segments and lines (an exact sample count at 24 kHz).")
@click.option("--sequential", is_flag=True, help="Run the three stages in this process (same audio for the same seed).")
@click.option("--connect", help="Submit to a running `tts-pipeline serve` at this request endpoint.")
@click.option("--pub", help="The server's publish endpoint (with --connect).")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@click.option("--voice-file", type=click.Path(dir_okay=False),
              help="Speak with the voice of this recording (computed here once, cached by content in the voices dir).")
@model_options
@param_options
def say(text, text_file, fmt, output_file, sentence_silence, sequential, connect, pub, quiet, voice_file, **kw) -> None:
    """Synthesize TEXT (or --text-file, or stdin lines as they arrive) to stdout or a file, mono 24 kHz.

    Long text is split into sentence segments that fit the model; segments and lines are
    pipelined and written in order, --sentence-silence apart.
    """
    from pipeline.models import ModelSpec
    from pipeline.say import SayError, SayOptions, run_say

    _terminate_on_sigterm()
    params = collect_params(kw)
    if connect and not pub:
        raise click.UsageError("--connect needs --pub (both are printed by `tts-pipeline serve`)")
    window = kw["max_inflight"]
    opts = SayOptions(texts=text, text_file=text_file, fmt=fmt, output_file=output_file, params=params,
                      sentence_silence=sentence_silence, quiet=quiet, window=window, voice_file=voice_file,
                      voices_dir=kw["voices_dir"])
    if connect:
        opts.mode, opts.connect, opts.pub = "remote", connect, pub
        opts.model = ModelSpec(checkpoint=kw["checkpoint"], preset=kw["preset"], model=kw.get("model"))  # whose tokenizer segments the text
    else:
        opts.mode = "sequential" if sequential else "local"
        opts.config = build_config(kw)
        opts.model = opts.config.model
    check_params(params, opts.model if not connect else None)
    try:
        run_say(opts, log)
    except SayError as e:
        fail(str(e), e.code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


SERVE_POLL_S = 0.1  # how often `serve`'s main thread looks for a signal or a supervisor that gave up
DEFAULT_DRAIN_TIMEOUT_S = 10.0  # long enough for a typical sentence in flight to finish, short for an orchestrator's stop


@main.command()
@model_options
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=DEFAULT_DRAIN_TIMEOUT_S, show_default=True,
              help="On SIGTERM / Ctrl-C: seconds to let requests in flight finish (new ones get `shutting down`); "
                   "a second signal stops at once.")
@click.option("--restart-budget", type=click.IntRange(min=0), default=5, show_default=True,
              help="Stage restarts allowed within --restart-window; one more death and the server exits non-zero.")
@click.option("--restart-window", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds over which --restart-budget counts.")
def serve(drain_timeout, restart_budget, restart_window, **kw) -> None:
    """Run the pipeline for remote clients: prints its request and publish endpoints, runs until Ctrl-C / SIGTERM.

    A stage that dies is restarted (see --restart-budget). The first SIGTERM / Ctrl-C drains: no
    new requests, those in flight finish (up to --drain-timeout, then `shutting down` errors),
    exit 0. A second signal stops at once.
    """
    import dataclasses
    import time

    import zmq

    from pipeline.api import Pipeline
    from pipeline.launcher import PipelineStartError
    from stages.common.weights import CheckpointError

    config = dataclasses.replace(build_config(kw), restart_budget=restart_budget, restart_window_s=restart_window)
    # The handler only appends and sets flags read without locks: it runs in the main thread between
    # any two bytecodes, so taking a lock there (Event.set) could deadlock against the main thread itself.
    signals: list[int] = []
    holder: list[Pipeline] = []

    def on_signal(signum, frame):
        signals.append(signum)
        if len(signals) == 1:
            if holder:
                log(f"{signal.Signals(signum).name}: draining (up to {drain_timeout:g} s); send it again to stop at once")
            else:
                raise KeyboardInterrupt  # still starting: nothing to drain
        elif holder:
            log("second signal: stopping now")
            holder[0].force_close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tts = Pipeline(config)
    try:
        tts.start()
    except (ValueError, CheckpointError, PipelineStartError) as e:
        fail(str(e))
    except zmq.ZMQError as e:  # an endpoint could not be bound
        fail(f"cannot bind the server's endpoints: {e}")
    except KeyboardInterrupt:
        fail("interrupted during start-up", 130)
    holder.append(tts)
    try:
        eps = tts.endpoints
        log(f"requests: {eps['requests']}")
        log(f"publish: {eps['pub']}")
        log(f"connect with: tts-pipeline say --connect {eps['requests']} --pub {eps['pub']} TEXT")
        log("serving; Ctrl-C to stop")
        while not signals and not tts.failed.is_set():
            time.sleep(SERVE_POLL_S)  # the coordinator thread does the work; this one waits for a signal or a give-up
    finally:
        if tts.failed.is_set():
            tts.close()
            fail(f"unhealthy: {tts.failure}")
        tts.close(drain=drain_timeout)
    log("stopped")


@main.command()
@click.argument("endpoint")
@click.option("--request-id", help="Only this request (exits at its end); default: every request.")
@click.option("--pcm", "write_pcm", is_flag=True, help="Write the PCM of the chunks to stdout.")
@click.option("--format", "fmt", default="s16le", show_default=True, type=click.Choice(FORMATS))
@click.option("--quiet", "-q", is_flag=True, help="No chunk headers on stderr.")
def subscribe(endpoint, request_id, write_pcm, fmt, quiet) -> None:
    """Print the chunk headers published at ENDPOINT (stderr) and optionally write their PCM (stdout)."""
    _terminate_on_sigterm()
    from ipc.schema import Audio, End, Error
    from ipc.sockets import SocketFactory
    from pipeline.client import RemoteError, Subscription

    writer = AudioWriter(fmt, SAMPLE_RATE) if write_pcm else None
    try:
        with SocketFactory() as sockets:
            sub = Subscription(sockets, endpoint, request_id)
            if not quiet:
                log(f"subscribed to {request_id or 'every request'} at {endpoint}")
            for msg in sub.messages():
                if not quiet:
                    head = {"kind": msg.KIND, "rid": msg.rid, "seq": msg.seq, "ts": msg.ts}
                    if isinstance(msg, Audio):
                        head.update(start=msg.start, samples=int(msg.pcm.shape[0]), sample_rate=msg.sample_rate)
                    elif isinstance(msg, End):
                        head.update(totals=dict(msg.totals), reason=msg.reason)
                    elif isinstance(msg, Error):
                        head.update(stage=msg.stage, message=msg.message)
                    log(json.dumps(head))
                if writer is not None and isinstance(msg, Audio):
                    writer.write(msg.pcm)
                if request_id and isinstance(msg, (End, Error)):
                    break
    except RemoteError as e:
        fail(str(e))
    except KeyboardInterrupt:
        pass


def supervision_info(config) -> dict[str, Any]:
    """The restart and drain policy (live stage health: Pipeline.status(), the HTTP /readyz and /metrics)."""
    from pipeline.launcher import RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S, STAGES

    return {"stages": list(STAGES), "restart_budget": config.restart_budget, "restart_window_s": config.restart_window_s,
            "restart_backoff_s": {"first": RESTART_BACKOFF_S, "max": RESTART_BACKOFF_MAX_S},
            "drain_timeout_s": DEFAULT_DRAIN_TIMEOUT_S,
            "health": "Pipeline.status(); `tts-pipeline http`: GET /readyz, /metrics (tts_stage_up, tts_stage_restarts)"}


@main.command()
@model_options
def info(**kw) -> None:
    """JSON describing the model, sample rate, formats and endpoints (on stdout)."""
    from ipc.schema import KINDS, PROTOCOL_VERSION

    config = build_config(kw)
    spec = config.model
    try:
        kind = spec.kind
    except Exception as e:  # an undetectable or ambiguous directory: say why, non-zero
        fail(str(e))
    out = {
        "model": {"name": kind, "checkpoint": str(spec.checkpoint) if spec.checkpoint else None, "builtin": spec.builtin,
                  "preset": None if spec.checkpoint else spec.preset, "description": spec.describe(),
                  "dtype": spec.dtype, "devices": {s: config.device(s) for s in ("t3", "cfm", "hifigan")}},
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "samples_per_token": 960,
        "formats": list(FORMATS),
        "output_files": list(SUFFIXES),
        "schedule_defaults": config.schedule.to_dict(),  # the model family's (Turbo: 2 solver steps)
        "endpoints": {"transport": config.transport,
                      "requests": "ROUTER (DEALER clients send `request`, get `accepted` or `error`)",
                      "pub": "XPUB (topic = request id + NUL byte; `welcome` on subscribe)",
                      "where": "printed by `tts-pipeline serve`" if config.transport == "ipc" or not config.base_port
                      else f"tcp://{config.host}:{config.base_port}.."},
        "wire_protocol": {"version": PROTOCOL_VERSION, "kinds": sorted(KINDS)},
        "threads_per_stage": config.stage_threads(),
        "supervision": supervision_info(config),
        "voices_dir": str(config.voices_root()),  # where --voice / a request's `voice` names are looked up
    }
    click.echo(json.dumps(out, indent=2))


@main.command()
def selfcheck() -> None:
    """Round-trip every wire message kind over ipc:// and tcp://, and time a message."""
    from ipc.schema import KINDS
    from ipc.selfcheck import round_trip_all, time_round_trips

    for transport in ("ipc", "tcp"):
        ok = round_trip_all(transport)
        log(f"selfcheck: {ok}/{len(KINDS)} message kinds round-tripped over {transport}://")
        if ok != len(KINDS):
            sys.exit(1)
    for size, label in ((0, "header-only"), (1 << 20, "1 MiB tensor")):
        t = time_round_trips(size, 200)
        log(f"selfcheck: {label} message encode+send+recv+decode: median {t['median_s'] * 1e6:.0f} us")
    log("selfcheck: wire protocol OK")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
              add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args) -> None:
    """Benchmark TTFB, RTF, underrun and wire time, pipelined vs sequential (a checkout's benchmarks/; --help for options)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "harness" / "main.py").is_file():
        fail("the benchmark harness lives in a source checkout (benchmarks/harness); run this from one")
    sys.path.insert(0, str(root))
    from benchmarks.harness.main import main as bench_main

    _terminate_on_sigterm()
    bench_main(list(args), prog_command="tts-pipeline bench " + " ".join(args))


from pipeline.voice_cli import voice as _voice_group  # noqa: E402  (the command bodies live there)

main.add_command(_voice_group)


def _add_http_command() -> None:
    """`tts-pipeline http` (its body lives in pipeline/http/command.py; the server extra is imported when it runs)."""
    from pipeline.http.command import build_command

    main.add_command(build_command(model_options, build_config, fail, log))


_add_http_command()

if __name__ == "__main__":
    main()
