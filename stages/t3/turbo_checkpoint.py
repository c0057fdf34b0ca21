"""Turbo T3 weights: the schema of t3_turbo_v1.safetensors, strict loading, and the built-in random model."""
from __future__ import annotations

from pathlib import Path

import torch

from stages.common.weights import MATRIX, Schema, TensorSpec, random_checkpoint, read_checkpoint, schema_from_module
from stages.t3.turbo_config import TurboT3Config
from stages.t3.turbo_model import UNUSED_KEYS, TurboT3

T3_TURBO_FILE = "t3_turbo_v1.safetensors"


def turbo_t3_model_schema(cfg: TurboT3Config) -> Schema:
    """The tensors the model keeps (file keys, i.e. the module's state-dict keys)."""
    with torch.device("meta"):
        return schema_from_module(TurboT3(cfg))


def turbo_t3_file_schema(cfg: TurboT3Config) -> Schema:
    """Every key of t3_turbo_v1.safetensors: the model's plus the two tables it never reads."""
    d = cfg.hidden_size
    unused = {"tfmr.wte.weight": TensorSpec((cfg.wte_rows, d), MATRIX),
              "text_head.weight": TensorSpec((cfg.text_vocab_size, d), MATRIX)}
    assert set(unused) == set(UNUSED_KEYS)
    return {**turbo_t3_model_schema(cfg), **unused}


def _materialise(cfg: TurboT3Config, tensors: dict[str, torch.Tensor], device, dtype) -> TurboT3:
    with torch.device("meta"):
        model = TurboT3(cfg)
    kept = {k: v for k, v in tensors.items() if k not in UNUSED_KEYS}
    model.load_state_dict(kept, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_turbo_t3(path: str | Path, cfg: TurboT3Config, device="cpu", dtype=torch.float32) -> TurboT3:
    """Strictly load a reference t3_turbo_v1.safetensors (every key checked, `tfmr.wte` and `text_head`
    included, then dropped); CheckpointError names the file and every offending key."""
    return _materialise(cfg, read_checkpoint(path, turbo_t3_file_schema(cfg)), device, dtype)


def builtin_turbo_t3_checkpoint(cfg: TurboT3Config) -> dict[str, torch.Tensor]:
    """The whole file by the golden recipe; for `turbo-tiny` identical to the golden t3_turbo_v1.safetensors."""
    return random_checkpoint(turbo_t3_file_schema(cfg))


def build_builtin_turbo_t3(cfg: TurboT3Config, device="cpu", dtype=torch.float32) -> TurboT3:
    """The built-in random-weight model (only the tensors it keeps are made)."""
    return _materialise(cfg, random_checkpoint(turbo_t3_model_schema(cfg)), device, dtype)
