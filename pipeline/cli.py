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
from pipeline.text.plan import DEFAULT_SENTENCE_SILENCE_S

SAMPLE_RATE = 24_000  # Hz


def log(msg: str) -> None:
    click.echo(msg, err=True)


def fail(msg: str, code: int = 1) -> None:
    log(f"error: {msg}")
    sys.exit(code)


def _terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every context manager stops the stages and removes the run directory."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# --- shared options ------------------------------------------------------------------------
def _device_option(ctx, param, value):
    """Check a device flag at parse time (before any stage starts): cpu, cuda, cuda:N, and CUDA present."""
    from pipeline.launcher import ConfigError, check_device

    if value is None:
        return None
    try:
        return check_device(value, param.name)
    except ConfigError as e:
        raise click.BadParameter(e.reason, ctx=ctx, param=param) from None


def _flag(option: str) -> str:
    """A PipelineConfig / request parameter name as its command-line flag ("max_inflight" -> "'--max-inflight'")."""
    return f"'--{option.replace('_', '-')}'"


def model_options(f):
    for opt in reversed([
        click.option("--checkpoint", type=click.Path(file_okay=False), help="Checkpoint directory: Chatterbox's (t3_cfg.safetensors, s3gen.safetensors, tokenizer.json, conds.pt) or Turbo's (t3_turbo_v1.safetensors, s3gen_meanflow.safetensors, ve.safetensors, conds.pt, GPT-2 tokenizer files); detected."),
        click.option("--hf-repo", help="Download the checkpoint from this Hugging Face repo (needs the `hf` extra and network)."),
        click.option("--preset", default="tiny", show_default=True,
                     type=click.Choice(["tiny", "small", "chatterbox", "turbo-tiny", "turbo-small", "turbo"]),
                     help="Sizes of the built-in random-weight model (ignored with --checkpoint); turbo* = Chatterbox Turbo."),
        click.option("--model", type=click.Choice(["chatterbox", "turbo"]), default=None,
                     help="Which model a --checkpoint directory holding both layouts runs (otherwise detected)."),
        click.option("--device", default="cpu", show_default=True, callback=_device_option,
                     help="torch device for every stage: cpu, cuda (the current CUDA device) or cuda:N."),
        click.option("--t3-device", callback=_device_option, help="Override --device for T3."),
        click.option("--cfm-device", callback=_device_option, help="Override --device for CFM."),
        click.option("--hifigan-device", callback=_device_option, help="Override --device for HiFiGAN."),
        click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "bfloat16", "float16"]),
                     help="dtype of T3 and CFM (HiFiGAN always runs float32)."),
        click.option("--threads", type=click.IntRange(min=0), default=0, help="torch threads per stage process (0 = cores / 3)."),
        click.option("--t3-threads", type=click.IntRange(min=1), help="Override --threads for T3 (the autoregressive bottleneck on CPU)."),
        click.option("--transport", default="ipc", show_default=True, type=click.Choice(["ipc", "tcp"])),
        click.option("--port", type=click.IntRange(0, 65535), default=0,
                     help="tcp: first of 7 consecutive ports (0 = free ports)."),
        click.option("--max-inflight", type=click.IntRange(min=1), default=4, show_default=True, help="Concurrent requests in T3."),
        click.option("--max-queue", type=click.IntRange(min=0), default=60, show_default=True,
                     help="Requests admitted beyond --max-inflight (waiting for a slot); past both: 'server busy'."),
        click.option("--voices-dir", type=click.Path(file_okay=False),
                     help="Folder of stored voices that --voice / a request's `voice` names (default: the user's data dir, "
                          "as `voice add`)."),
        click.option("--cuda-graphs/--no-cuda-graphs", default=None,
                     help="Replay the T3 tick and the flow step as CUDA graphs (default: on for CUDA stages; docs/gpu.md)."),
        click.option("--cuda-ipc", is_flag=True,
                     help="CFM -> HiFiGAN mel as CUDA IPC handles when both run on one CUDA device (docs/gpu.md)."),
    ]):
        f = opt(f)
    return f


PARAM_OPTIONS = [
    ("--seed", int, "Seed: the same seed and text give the same audio."),
    ("--temperature", float, "Sampling temperature (default 0.8)."),
    ("--cfg-weight", float, "Classifier-free guidance weight (default 0.5)."),
    ("--exaggeration", float, "Emotion exaggeration (default 0.5; a stored voice's own with --voice/--voice-file)."),
    ("--voice", str, "A stored voice (`tts-pipeline voice add NAME ref.wav`); default: the model's own voice."),
    ("--min-p", float, "Min-p filter (default 0.05)."),
    ("--top-p", float, "Top-p filter (default 1.0 = off; Turbo 0.95)."),
    ("--top-k", int, "Turbo only: top-k filter (default 1000; 0 = off)."),
    ("--repetition-penalty", float, "Repetition penalty (default 1.2)."),
    ("--max-new-tokens", int, "Speech token cap (default: proportional to the text)."),
    ("--first-chunk-tokens", int, "Tokens in the first audio chunk (default 4)."),
    ("--growth", float, "Growth of later chunks (default 2.0)."),
    ("--max-hop-tokens", int, "Largest chunk in tokens (default 32)."),
    ("--extra-lookahead-tokens", int, "Right context beyond the 3 required tokens (default 0)."),
    ("--left-context-tokens", str, "Re-run left context in tokens, or 'all' (default 32)."),
    ("--prompt-tokens", str, "Voice-prompt tokens per flow call, or 'all' (default 50)."),
    ("--n-timesteps", int, "Flow solver steps (default 10; Turbo 2)."),
    ("--first-chunk-timesteps", int, "Flow solver steps of the first chunk only (default: --n-timesteps)."),
    ("--vocoder-lookahead-frames", str, "Frames the vocoder holds back, or 'exact' (default exact)."),
]


def param_options(f):
    for name, typ, help_ in reversed(PARAM_OPTIONS):
        f = click.option(name, type=typ, default=None, help=help_)(f)
    return click.option("--ignore-eos", is_flag=True, help="Generate exactly --max-new-tokens tokens.")(f)


def collect_params(kw: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for name, _, _ in PARAM_OPTIONS:
        key = name[2:].replace("-", "_")
        v = kw.pop(key, None)
        if v is not None:
            if key in ("left_context_tokens", "prompt_tokens", "vocoder_lookahead_frames") and v not in ("all", "exact"):
                try:
                    v = int(v)
                except ValueError:
                    raise click.BadParameter(f"must be an integer or 'all'/'exact', got {v!r}", param_hint=name)
            params[key] = v
    if kw.pop("ignore_eos", False):
        params["ignore_eos"] = True
    return params


def build_config(kw: dict[str, Any]):
    from pipeline.launcher import PipelineConfig
    from pipeline.models import ModelSpec

    checkpoint, hf_repo = kw.pop("checkpoint"), kw.pop("hf_repo")
    if hf_repo:
        if checkpoint:
            raise click.UsageError("give --checkpoint or --hf-repo, not both")
        checkpoint = download_checkpoint(hf_repo)
    spec = ModelSpec(checkpoint=checkpoint, preset=kw.pop("preset"), device=kw.pop("device"), dtype=kw.pop("dtype"),
                     model=kw.pop("model", None))
    devices = {s: d for s in ("t3", "cfm", "hifigan") if (d := kw.pop(f"{s}_device"))}
    t3_threads = kw.pop("t3_threads")
    options = gpu_stage_options(kw.pop("cuda_graphs", None), spec.device, devices, kw.pop("cuda_ipc", False))
    config = PipelineConfig(model=spec, devices=devices, threads=kw.pop("threads"), transport=kw.pop("transport"),
                            stage_thread_counts={"t3": t3_threads} if t3_threads else {},
                            base_port=kw.pop("port"), max_inflight=kw.pop("max_inflight"), max_queue=kw.pop("max_queue"),
                            voices_dir=kw.pop("voices_dir", None), stage_options=options)
    return check_config(config)


def check_config(config):
    """PipelineConfig.check() with click's conventions: exit 2, `Error: Invalid value for '--port': ...`."""
    from pipeline.launcher import ConfigError

    try:
        return config.check()
    except ConfigError as e:
        raise click.BadParameter(e.reason, param_hint=_flag(e.option)) from None


def check_params(params: dict[str, Any], model) -> dict[str, Any]:
    """Request flags validated as the coordinator will (before start-up), errors naming the flag."""
    from pipeline.launcher import max_new_tokens_limit
    from stages.common.params import parse_params

    try:  # the model's parameter family; remote (model None): the server knows its model, so either family
        kinds = [model.kind] if model is not None else ["chatterbox", "turbo"]
    except Exception:  # an undetectable checkpoint: start-up names it
        kinds = ["chatterbox"]
    errors = []
    for kind in kinds:
        try:
            parse_params(params, model=kind)
            break
        except ValueError as e:
            errors.append(e)
    else:
        text = str(errors[0])
        field = text.split(" ", 1)[0]
        raise click.BadParameter(text, param_hint=_flag(field) if field in params else None) from None
    limit = max_new_tokens_limit(model) if model is not None else None  # remote: the server checks its own model
    if limit is not None and params.get("max_new_tokens", 0) > limit:
        raise click.BadParameter(f"{params['max_new_tokens']} is over this model's limit of {limit} speech tokens "
                                 "(the KV-cache length less the shortest prompt)", param_hint="'--max-new-tokens'")
    return params


def gpu_stage_options(cuda_graphs: bool | None, device: str, devices: dict[str, str],
                      cuda_ipc: bool = False) -> dict[str, Any]:
    """--cuda-graphs / --no-cuda-graphs and --cuda-ipc as stage options (absent: each stage decides by its device)."""
    options: dict[str, Any] = {}
    if cuda_graphs is not None:
        if cuda_graphs and not any(d.startswith("cuda") for d in [device, *devices.values()]):
            raise click.BadParameter("needs a CUDA stage (--device cuda or --t3-device/--cfm-device cuda)",
                                     param_hint="--cuda-graphs")
        options["cuda_graphs"] = bool(cuda_graphs)
    if cuda_ipc:
        cfm, hifigan = devices.get("cfm", device), devices.get("hifigan", device)
        if not cfm.startswith("cuda") or cfm != hifigan:
            raise click.BadParameter(f"needs CFM and HiFiGAN on one CUDA device (they run on {cfm} and {hifigan})",
                                     param_hint="--cuda-ipc")
        options["cuda_ipc"] = True
    return options


def download_checkpoint(repo: str) -> str:
    from pipeline.layout import CHATTERBOX_FILES, TURBO_FILES

    # both layouts' files (a repo holds one of them; detection then picks it), Turbo's optional tokenizer files too
    patterns = sorted({*CHATTERBOX_FILES, *TURBO_FILES, "special_tokens_map.json", "tokenizer_config.json"})

    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        fail("--hf-repo needs huggingface_hub: pip install '.[hf]' (or download the files and use --checkpoint DIR)")
    try:
        return snapshot_download(repo_id=repo, allow_patterns=patterns)
    except Exception as e:
        fail(f"could not download {repo}: {type(e).__name__}: {e}")


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
