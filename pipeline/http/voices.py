"""Voices and model names the HTTP API accepts, and the request parameters each one means.

`default` is the checkpoint's built-in conditioning (conds.pt); OpenAI's voice names are
accepted as aliases of it, so clients that hard-code `alloy` work unchanged. Every voice in
the server's voice store (`tts-pipeline voice add NAME ref.wav`) is a voice by its name.
/v1/audio/voices lists them; `voice_params` is the one place that maps the body's `voice`
to request parameters. The store is read on each call (one small JSON per voice), so a
voice added or removed while the server runs is seen at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.common.layout import CHATTERBOX, TURBO

DEFAULT_VOICE = "default"
# OpenAI's built-in voice names (audio.speech); each is an alias of the default voice here.
OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
                 "shimmer", "verse")
# The served model's id, per model family: ResembleAI's repository names (ResembleAI/chatterbox, .../chatterbox-turbo).
MODEL_IDS = {CHATTERBOX: "chatterbox", TURBO: "chatterbox-turbo"}
# OpenAI's speech model names, accepted as aliases of the served model (clients send one of them by default).
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


class UnknownName(ValueError):
    """A voice or model the server does not have; the message lists the ones it has."""


def list_voices(voices_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The default voice, then every readable stored voice in `voices_dir` (name order)."""
    out = [{"id": DEFAULT_VOICE, "name": DEFAULT_VOICE, "aliases": list(OPENAI_VOICES),
            "description": "the checkpoint's built-in voice (conds.pt)"}]
    if voices_dir is None:
        return out
    from stages.voice.store import VoiceStore, VoiceStoreError

    store = VoiceStore(voices_dir)
    for name in store.names():
        try:
            m = store.info(name).manifest
        except VoiceStoreError:  # a damaged voice is not offered (a request naming it gets the reason)
            continue
        src = m.get("source", {})
        out.append({"id": name, "name": name, "aliases": [], "exaggeration": m.get("exaggeration"),
                    "seconds": src.get("used_seconds"), "created": m.get("created"),
                    "description": f"stored voice from {src.get('file', 'a recording')}"})
    return out


def voice_params(name: str, voices_dir: str | Path | None = None) -> dict[str, Any]:
    """Request parameters for voice `name` (none for the default voice); UnknownName otherwise."""
    if name == DEFAULT_VOICE or name in OPENAI_VOICES:
        return {}
    if voices_dir is not None:
        from stages.voice.store import FILE_PREFIX, VoiceStore, VoiceStoreError

        store = VoiceStore(voices_dir)
        if not name.startswith(FILE_PREFIX) and store.exists(name):
            try:
                store.info(name)
            except VoiceStoreError as e:
                raise UnknownName(str(e)) from None
            return {"voice": name}
    stored = VoiceStore(voices_dir).names() if voices_dir is not None else []
    raise UnknownName(f"voice {name!r} is not available; available: {', '.join([DEFAULT_VOICE, *stored])} "
                      f"(OpenAI names {', '.join(OPENAI_VOICES)} are aliases of {DEFAULT_VOICE})")


def model_id(kind: str) -> str:
    """The id the server lists for the model family it runs (`kind`: "chatterbox" or "turbo")."""
    return MODEL_IDS[kind]


def model_aliases(kind: str) -> list[str]:
    """The other names a request may give the served model: the family's name (where it is not the id), OpenAI's."""
    return [name for name in (kind, *OPENAI_MODELS) if name != MODEL_IDS[kind]]


def check_model(name: str | None, kind: str) -> None:
    """The body's `model` on a server of model family `kind`: its id, an alias, or unset; UnknownName otherwise."""
    served = model_id(kind)
    if name is None or name == served or name in model_aliases(kind):
        return
    raise UnknownName(f"model {name!r} is not available: this server runs {served} "
                      f"(aliases: {', '.join(model_aliases(kind))})")
