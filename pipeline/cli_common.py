"""What the `tts-pipeline` commands share: stderr logging, the model and request options, and the pipeline config they build.

Every flag is checked here, before any stage process starts (click's conventions: exit 2,
`Error: Invalid value for '--flag'`); `pipeline/cli.py` holds the commands themselves.
"""
from __future__ import annotations

import sys
from typing import Any

import click


def log(msg: str) -> None:
    click.echo(msg, err=True)


def fail(msg: str, code: int = 1) -> None:
    log(f"error: {msg}")
    sys.exit(code)


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
