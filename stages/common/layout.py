"""Which model a checkpoint directory holds: the base Chatterbox layout or the Turbo layout.

Used by the front end before any stage starts (and by each stage's loader), so a wrong or incomplete directory fails early with every
missing file named. Detection looks at the T3 file, the one file each layout alone has;
a directory with both needs an explicit choice (`--model chatterbox|turbo`).
"""
from __future__ import annotations

from pathlib import Path

from stages.common.weights import CheckpointError

CHATTERBOX, TURBO = "chatterbox", "turbo"
MODEL_KINDS = (CHATTERBOX, TURBO)

# The files each layout must hold (HF ResembleAI/chatterbox and ResembleAI/chatterbox-turbo).
# ve.safetensors (the VoiceEncoder) is read by voice cloning only; Turbo's layout requires it
# (its loader checks it), the base layout does not (as before).
CHATTERBOX_FILES = ("t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
TURBO_FILES = ("t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors", "ve.safetensors", "conds.pt",
               "vocab.json", "merges.txt", "added_tokens.json")
LAYOUT_FILES = {CHATTERBOX: CHATTERBOX_FILES, TURBO: TURBO_FILES}
MARKER_FILES = {CHATTERBOX: "t3_cfg.safetensors", TURBO: "t3_turbo_v1.safetensors"}
# Built-in random-weight presets of each family (the sizes live in each stage's config).
CHATTERBOX_PRESETS = ("tiny", "small", "chatterbox")
TURBO_PRESETS = ("turbo-tiny", "turbo-small", "turbo")
PRESETS = CHATTERBOX_PRESETS + TURBO_PRESETS


def preset_model(preset: str) -> str:
    """The family of a built-in preset (ValueError naming `preset` for an unknown one)."""
    if preset in TURBO_PRESETS:
        return TURBO
    if preset in CHATTERBOX_PRESETS:
        return CHATTERBOX
    raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")


class AmbiguousCheckpointError(CheckpointError):
    """The directory holds both layouts; the caller must name the model."""


def detect_model(directory: str | Path, model: str | None = None) -> str:
    """-> "chatterbox" or "turbo" for a checkpoint directory, after checking that layout's files.

    `model` forces the choice (then only that layout's files are checked). Raises ValueError
    for an unknown `model`, AmbiguousCheckpointError when both T3 files are present and no
    model is given, and CheckpointError for a missing directory, a directory of neither layout,
    or missing files (all named).
    """
    if model is not None and model not in MODEL_KINDS:
        raise ValueError(f"model must be one of {', '.join(MODEL_KINDS)}, got {model!r}")
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: checkpoint directory not found")
    kind = model
    if kind is None:
        present = [k for k in MODEL_KINDS if (d / MARKER_FILES[k]).is_file()]
        if len(present) > 1:
            raise AmbiguousCheckpointError(
                f"{d}: holds both a Chatterbox ({MARKER_FILES[CHATTERBOX]}) and a Turbo ({MARKER_FILES[TURBO]}) "
                "checkpoint; choose one with --model chatterbox|turbo")
        if not present:
            raise CheckpointError(
                f"{d}: not a checkpoint directory: expected Chatterbox's {', '.join(CHATTERBOX_FILES)} "
                f"or Turbo's {', '.join(TURBO_FILES)}")
        kind = present[0]
    missing = [f for f in LAYOUT_FILES[kind] if not (d / f).is_file()]
    if missing:
        raise CheckpointError(f"{d}: {kind} checkpoint directory is missing {', '.join(missing)}")
    return kind
