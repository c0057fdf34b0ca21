"""The request bodies (OpenAI's speech body plus our knobs), their validation, and the JSON errors.

Two kinds of refusal, each naming the field in `error.param`:
- 422: the body does not match the schema (not JSON, a missing or unknown field, a wrong
  type, a non-finite number). pydantic finds these.
- 400: a well-formed body the engine refuses (empty or too long input, temperature 0, an
  unknown voice or format, speed other than 1). The engine's own validation finds most of
  these (stages.common.params.resolve_params), so the limits live in one place.

The knobs are the fields of the engine's request parameters, read from its dataclasses (each
model family's sampling parameters, stages.common.params.SAMPLING, and ChunkSchedule), so a
knob added there is accepted here too. The body takes the knobs of every family; which ones a
request may carry is the served family's rule (`resolve_params(..., model=kind)`): on the base
model `top_k` is a 400 naming it, on Turbo the base-only knobs are accepted and have no effect.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Optional, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from pipeline.http import voices
from pipeline.http.encoders import STREAMABLE, UNAVAILABLE
from stages.common.layout import CHATTERBOX, TURBO

MAX_INPUT_CHARS = 4096  # OpenAI's documented limit for `input`; longer text is split by the client
# Knobs not exposed as body fields: `voice` is the OpenAI field of that name (voices.voice_params maps it).
HIDDEN_KNOBS = ("voice",)
# What each model family offers instead of OpenAI's `instructions` (a style prompt).
STYLE_HINTS = {CHATTERBOX: "use exaggeration and cfg_weight", TURBO: "put tags such as [laugh] in the input"}


class ApiError(Exception):
    """An error answered as OpenAI does: {"error": {"message", "type", "param", "code"}} with `status`."""

    TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error",
             422: "invalid_request_error", 500: "server_error", 503: "server_busy"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}


def knob_fields() -> dict[str, Any]:
    """name -> (Optional[type], None) for every request parameter of any model family (one field per name)."""
    from stages.cfm.schedule import ChunkSchedule
    from stages.common.params import SAMPLING

    out: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for cls in (*SAMPLING.values(), ChunkSchedule):
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in HIDDEN_KNOBS:
                continue
            spec = (Optional[hints[f.name]], None)
            if out.setdefault(f.name, spec) != spec:  # one body field cannot take two types
                raise TypeError(f"knob {f.name!r} is {hints[f.name]} in {cls.__name__} but {out[f.name][0]} "
                                f"in {owner[f.name]}")
            owner.setdefault(f.name, cls.__name__)
    return out


class _Strict(BaseModel):
    # strict: no "0.8" -> 0.8 or true -> 1 coercion; NaN and infinities refused; unknown fields refused
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


SpeechBody = create_model(
    "SpeechBody", __base__=_Strict,
    model=(Optional[str], None),  # the served model's id, or an alias (voices.check_model)
    input=(str, ...),
    voice=(str, voices.DEFAULT_VOICE),
    response_format=(str, "mp3"),  # OpenAI's default
    speed=(float, 1.0),
    instructions=(Optional[str], None),  # OpenAI's style prompt: refused unless empty
    stream_format=(Optional[str], None),  # OpenAI's: "audio" only
    stream=(Optional[bool], None),  # ours: None = stream when the format can be streamed
    **knob_fields(),
)
OPENAI_FIELDS = ("model", "input", "voice", "response_format", "speed", "instructions", "stream_format", "stream")
KNOBS = tuple(k for k in SpeechBody.model_fields if k not in OPENAI_FIELDS)


@dataclass
class Prepared:
    """A validated request: what to synthesize, with which parameters (seed resolved), in which format."""

    text: str
    params: dict[str, Any]
    fmt: str
    streaming: bool


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(422, f"body is not valid JSON: {e}", code="invalid_json") from None


def schema_error(e: ValidationError) -> ApiError:
    """The first problem pydantic found, naming its field."""
    err = e.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and p in ("int", "str", "float", "bool", "none"))]
    param = ".".join(loc) or None
    kind = err["type"]
    if kind == "missing":
        msg = f"{param} is required"
    elif kind == "extra_forbidden":
        msg = f"{param} is not a field of this request (see docs/http.md for the fields)"
    elif kind == "finite_number":
        msg = f"{param} must be a finite number, got {err.get('input')!r}"
    else:
        msg = f"{param}: {err['msg'].lower()}, got {err.get('input')!r}" if param else err["msg"]
    return ApiError(422, msg, param, kind)


def validate_body(data: Any, model=SpeechBody):
    if not isinstance(data, dict):
        raise ApiError(422, f"body must be a JSON object, got {type(data).__name__}", code="invalid_type")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise schema_error(e) from None


def check_input(text: str, max_chars: int = MAX_INPUT_CHARS) -> str:
    if not text.strip():
        raise ApiError(400, "input is empty or whitespace only", "input", "empty_input")
    if len(text) > max_chars:
        raise ApiError(400, f"input is {len(text)} characters, over the limit of {max_chars} "
                            "(split the text into several requests)", "input", "input_too_long")
    return text


def _blame(params: dict[str, Any], served) -> str | None:
    """The first field that fails on its own (the engine's messages name fields, but not in a parseable way)."""
    from stages.common.params import resolve_params

    for name, value in params.items():
        try:
            resolve_params({name: value}, served.schedule, served.kind)
        except ValueError:
            return name
    return None


def resolve(params: dict[str, Any], served) -> dict[str, Any]:
    """The engine's validation of the knobs, by the served model family's rules (`served`: backend.Served);
    the seed is resolved here, so the response can report it."""
    from stages.common.params import resolve_params

    try:
        return resolve_params(params, served.schedule, served.kind)
    except ValueError as e:
        raise ApiError(400, str(e), _blame(params, served), "invalid_value") from None


def prepare(body, formats: tuple[str, ...], served, max_chars: int = MAX_INPUT_CHARS, voices_dir=None) -> Prepared:
    """A schema-valid SpeechBody -> Prepared, or ApiError(400) naming the field.

    `served`: what the pipeline runs (backend.Served: model family, default schedule); `voices_dir`: the stored voices.
    """
    try:
        voices.check_model(body.model, served.kind)
    except voices.UnknownName as e:
        raise ApiError(400, str(e), "model", "unknown_name") from None
    try:
        voice = voices.voice_params(body.voice, voices_dir)
    except voices.UnknownName as e:
        raise ApiError(400, str(e), "voice", "unknown_name") from None
    text = check_input(body.input, max_chars)
    fmt = body.response_format
    if fmt in UNAVAILABLE:
        raise ApiError(400, f"response_format {fmt!r} is not available: {UNAVAILABLE[fmt]}; "
                            f"available: {', '.join(formats)}", "response_format", "unsupported_format")
    if fmt not in formats:
        raise ApiError(400, f"response_format must be one of {', '.join(formats)}, got {fmt!r}",
                       "response_format", "unsupported_format")
    if not math.isclose(body.speed, 1.0):
        raise ApiError(400, f"speed {body.speed!r} is not supported: only 1.0 (the engine does not time-stretch; "
                            "change the playback rate on the client)", "speed", "unsupported_value")
    if body.instructions:
        raise ApiError(400, "instructions are not supported (Chatterbox takes no style prompt; "
                            f"{STYLE_HINTS[served.kind]})", "instructions", "unsupported_value")
    if body.stream_format not in (None, "audio"):
        raise ApiError(400, f"stream_format must be 'audio' (raw audio bytes), got {body.stream_format!r}",
                       "stream_format", "unsupported_value")
    if body.stream and fmt not in STREAMABLE:
        raise ApiError(400, f"response_format {fmt!r} cannot be streamed (its header needs the total length); "
                            f"stream pcm or wav, or leave stream unset", "stream", "unsupported_value")
    streaming = fmt in STREAMABLE if body.stream is None else body.stream
    knobs = {k: v for k in KNOBS if (v := getattr(body, k)) is not None}
    params = resolve({**knobs, **voice}, served)
    return Prepared(text, params, fmt, streaming)
