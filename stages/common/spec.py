"""Which weights a stage runs: a checkpoint directory in the public layout, or the built-in random-weight model.

A `ModelSpec` is plain data: it crosses the spawn boundary into every stage process, and
each stage's own loader (`stages/<stage>/part.py`) reads only its part of the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from stages.common.weights import CheckpointError

# Files of the public checkpoint layout (HF ResembleAI/chatterbox) this engine reads.
T3_FILE, S3GEN_FILE, TOKENIZER_FILE, CONDS_FILE = "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt"
REQUIRED_FILES = (T3_FILE, S3GEN_FILE, TOKENIZER_FILE, CONDS_FILE)
BUILTIN_PRESET = "tiny"  # the built-in model: tiny sizes, weights made from each tensor's name and shape
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to run: a checkpoint directory, or the built-in model at `preset` sizes."""

    checkpoint: Path | None = None
    preset: str = BUILTIN_PRESET
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def builtin(self) -> bool:
        return self.checkpoint is None

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def describe(self) -> str:
        return f"checkpoint {self.checkpoint}" if self.checkpoint else f"built-in random-weight model (preset {self.preset})"

    def check(self) -> "ModelSpec":
        """Fail early, with every problem named, before any process starts."""
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.checkpoint is not None:
            d = Path(self.checkpoint)
            if not d.is_dir():
                raise CheckpointError(f"{d}: checkpoint directory not found")
            missing = [f for f in REQUIRED_FILES if not (d / f).is_file()]
            if missing:
                raise CheckpointError(f"{d}: checkpoint directory is missing {', '.join(missing)}")
        return self
