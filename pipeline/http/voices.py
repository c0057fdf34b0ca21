"""Voices and model names the HTTP API accepts, and the request parameters each one means.

Today the engine has one voice, the checkpoint's built-in conditioning, called `default`.
OpenAI's voice names are accepted as aliases of it, so clients that hard-code `alloy` work
unchanged; /v1/audio/voices lists them as aliases, not as voices of their own. Stored
voices (voice cloning) add entries here: `voice_params` is the one place that maps the
body's `voice` to request parameters.
"""
from __future__ import annotations

from typing import Any

DEFAULT_VOICE = "default"
# OpenAI's built-in voice names (audio.speech); each is an alias of the default voice here.
OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
                 "shimmer", "verse")
MODEL_ID = "chatterbox"
# OpenAI's speech model names, accepted as aliases of MODEL_ID (clients send one of them by default).
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


class UnknownName(ValueError):
    """A voice or model the server does not have; the message lists the ones it has."""


def list_voices() -> list[dict[str, Any]]:
    return [{"id": DEFAULT_VOICE, "name": DEFAULT_VOICE, "aliases": list(OPENAI_VOICES),
             "description": "the checkpoint's built-in voice (conds.pt)"}]


def voice_params(name: str) -> dict[str, Any]:
    """Request parameters for voice `name` (none for the default voice); UnknownName otherwise."""
    if name == DEFAULT_VOICE or name in OPENAI_VOICES:
        return {}
    raise UnknownName(f"voice {name!r} is not available; available: {DEFAULT_VOICE} "
                      f"(OpenAI names {', '.join(OPENAI_VOICES)} are aliases of it)")


def check_model(name: str | None) -> None:
    if name is None or name == MODEL_ID or name in OPENAI_MODELS:
        return
    raise UnknownName(f"model {name!r} is not available; available: {MODEL_ID} "
                      f"(OpenAI names {', '.join(OPENAI_MODELS)} are aliases of it)")
