"""`tts-pipeline voice add|list|rm`: the voice store from the command line (registered by pipeline/cli.py).

Messages go to stderr; `voice list` prints its table (or JSON) on stdout. Every bad input
is an error naming the voice or the file, with a non-zero exit, before any model runs.
"""
from __future__ import annotations

import json
import sys

import click

from pipeline.voices import VoiceLibrary, default_voices_dir

# The choices of pipeline/cli_common.py's model options (stages.common.layout's names; spelled out here
# because importing that module imports torch, and `--help` stays fast without it).
PRESETS = ("tiny", "small", "chatterbox", "turbo-tiny", "turbo-small", "turbo")
MODEL_KINDS = ("chatterbox", "turbo")


def _log(msg: str) -> None:
    click.echo(msg, err=True)


def _fail(msg: str) -> None:
    _log(f"error: {msg}")
    sys.exit(1)


def voices_dir_option(f):
    return click.option("--voices-dir", type=click.Path(file_okay=False),
                        help=f"Folder of stored voices (default: {default_voices_dir()}).")(f)


@click.group("voice")
def voice() -> None:
    """Stored voices: make one from a recording of someone speaking (zero-shot cloning), list, remove."""


@voice.command("add")
@click.argument("name")
@click.argument("recording")
@click.option("--exaggeration", type=float, default=0.5, show_default=True,
              help="Emotion exaggeration stored with the voice.")
@click.option("--force", is_flag=True, help="Replace a stored voice of the same name.")
@voices_dir_option
@click.option("--checkpoint", type=click.Path(file_okay=False),
              help="Checkpoint directory (needs ve.safetensors and s3gen.safetensors; Turbo: s3gen_meanflow.safetensors).")
@click.option("--preset", default="tiny", show_default=True, type=click.Choice(list(PRESETS)),
              help="Sizes of the built-in random-weight model (ignored with --checkpoint); turbo* = Chatterbox Turbo.")
@click.option("--model", type=click.Choice(list(MODEL_KINDS)), default=None,
              help="The model the voice is for, where a --checkpoint directory holds both layouts (else detected).")
@click.option("--device", default="cpu", show_default=True, help="torch device for the conditioning models.")
@click.option("--quiet", "-q", is_flag=True, help="No summary on stderr.")
def add(name, recording, exaggeration, force, voices_dir, checkpoint, preset, model, device, quiet) -> None:
    """Make voice NAME from RECORDING (WAV, FLAC, OGG, ...) and store it, for the model of --checkpoint / --preset.

    Chatterbox: at least 1 s of speech (~10 s is best); its T3 hears the first 6 s. Chatterbox Turbo:
    more than 5 s, gained to -27 LUFS first; its T3 hears the first 15 s. A voice serves the model
    family it was made for."""
    from pipeline.models import ModelSpec, warn_if_builtin
    from pipeline.voices import add_voice_from_file, voice_model_spec
    from stages.common.weights import CheckpointError
    from stages.voice.audio import VoiceInputError
    from stages.voice.store import VoiceStoreError

    library = VoiceLibrary(voices_dir)
    spec = ModelSpec(checkpoint=checkpoint, preset=preset, device=device, model=model)
    try:
        spec = voice_model_spec(spec)  # --model against the preset, a directory of both layouts: named, before any work
        library.check_new(name, force)
        if not quiet:
            warn_if_builtin(spec)
        info, audio, took = add_voice_from_file(library, name, recording, spec, exaggeration, force)
    except (VoiceStoreError, VoiceInputError, CheckpointError, ValueError) as e:
        _fail(str(e))
    for notice in audio.notices:
        _log(f"notice: {notice}")
    if not quiet:
        shapes = info.manifest["tensors"]
        emotion = "Turbo (no exaggeration)" if spec.turbo else f"exaggeration {info.exaggeration:g}"
        _log(f"voice {name!r} added to {library.root}: {audio.used_seconds:.2f} s of {recording} "
             f"({audio.sample_rate} Hz, {audio.channels} ch), {emotion}, "
             f"{shapes['t3.cond_prompt_speech_tokens']['shape'][1]} T3 / {shapes['gen.prompt_token']['shape'][1]} "
             f"flow prompt tokens, computed in {took:.2f} s; key {info.key[:16]}")


@voice.command("list")
@voices_dir_option
@click.option("--json", "as_json", is_flag=True, help="JSON (every manifest) instead of a table.")
def list_(voices_dir, as_json) -> None:
    """List the stored voices (stdout); `default` is the model's own voice."""
    from stages.voice.store import DEFAULT_VOICE

    library = VoiceLibrary(voices_dir)
    entries = library.voices()
    if as_json:
        out = {"voices_dir": str(library.root), "default": "the checkpoint's conds.pt (or the built-in voice)",
               "voices": [e.manifest if not isinstance(e, Exception) else {"error": str(e)} for e in entries]}
        click.echo(json.dumps(out, indent=2))
        return
    rows = [("NAME", "FOR", "SECONDS", "EXAGG", "MODEL", "CREATED", "KEY")]
    rows.append((DEFAULT_VOICE, "-", "-", "-", "the model's conds.pt (built-in voice without --checkpoint)", "-", "-"))
    for e in entries:
        if isinstance(e, Exception):
            rows.append(("?", "-", "-", "-", f"unreadable: {e}", "-", "-"))
            continue
        m = e.manifest
        src, model = m.get("source", {}), m.get("model", {})
        rows.append((e.name, e.family, f"{src.get('used_seconds', 0):.2f}", "-" if e.family == "turbo" else f"{e.exaggeration:g}",
                     model.get("checkpoint") or f"built-in {model.get('preset')}", m.get("created", "-"), e.key[:12]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    _log(f"{len(entries)} stored voice(s) in {library.root}")


@voice.command("rm")
@click.argument("name")
@voices_dir_option
def rm(name, voices_dir) -> None:
    """Remove stored voice NAME."""
    from stages.voice.store import VoiceStoreError

    library = VoiceLibrary(voices_dir)
    try:
        library.remove(name)
    except VoiceStoreError as e:
        _fail(str(e))
    _log(f"removed voice {name!r} from {library.root}")



