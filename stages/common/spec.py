"""Which weights a stage runs: a checkpoint directory in the public layout, or the built-in random-weight model.

A `ModelSpec` is plain data: it crosses the spawn boundary into every stage process, and
each stage's own loader (`stages/<stage>/part.py`) reads only its part of the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from stages.common.layout import CHATTERBOX, MODEL_KINDS, TURBO, detect_model, preset_model

# Files of the public checkpoint layout (HF ResembleAI/chatterbox) this engine reads.
T3_FILE, S3GEN_FILE, TOKENIZER_FILE, CONDS_FILE = "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt"
REQUIRED_FILES = (T3_FILE, S3GEN_FILE, TOKENIZER_FILE, CONDS_FILE)
BUILTIN_PRESET = "tiny"  # the built-in model: tiny sizes, weights made from each tensor's name and shape
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to run: a checkpoint directory, or the built-in model at `preset` sizes.

    `model` names the family ("chatterbox" or "turbo"); None = from the preset (built-in) or
    detected from the directory's files (stages/common/layout.py). The front end resolves it once
    (`resolved`), so every stage process loads the same family.
    """

    checkpoint: Path | None = None
    preset: str = BUILTIN_PRESET
    device: str = "cpu"
    dtype: str = "float32"
    model: str | None = None

    @property
    def builtin(self) -> bool:
        return self.checkpoint is None

    @property
    def kind(self) -> str:
        """"chatterbox" or "turbo" (raises CheckpointError / ValueError like `check`)."""
        if self.builtin:
            family = preset_model(self.preset)
            if self.model is not None and self.model != family:
                raise ValueError(f"--model {self.model} does not match the built-in preset {self.preset!r} "
                                 f"(a {family} preset)")
            return family
        if self.model is not None and self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {', '.join(MODEL_KINDS)}, got {self.model!r}")
        return self.model or detect_model(self.checkpoint)

    @property
    def turbo(self) -> bool:
        return self.kind == TURBO

    def resolved(self) -> "ModelSpec":
        """This spec with `model` filled in (detection runs once, here)."""
        return self if self.model is not None and not self.builtin else replace(self, model=self.kind)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def describe(self) -> str:
        turbo = " (Chatterbox Turbo)" if self._kind_or_none() == TURBO else ""
        if self.checkpoint:
            return f"checkpoint {self.checkpoint}{turbo}"
        return f"built-in random-weight model{turbo} (preset {self.preset})"

    def _kind_or_none(self) -> str | None:
        try:
            return self.kind
        except (ValueError, OSError):
            return None

    def check(self) -> "ModelSpec":
        """Fail early, with every problem named, before any process starts."""
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.checkpoint is None:
            self.kind  # an unknown preset, or --model against the preset's family
        else:
            detect_model(Path(self.checkpoint), self.model)  # the layout's files, every missing one named
        return self
