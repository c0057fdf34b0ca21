"""T3 weights: the checkpoint schema, strict loading of t3_cfg.safetensors, and the built-in random model."""
from __future__ import annotations

from pathlib import Path

import torch

from stages.common.weights import random_checkpoint, read_checkpoint, schema_from_module, TensorSpec
from stages.t3.config import T3Config
from stages.t3.model import T3


def t3_schema(cfg: T3Config) -> dict[str, TensorSpec]:
    """Checkpoint key -> (shape, init branch); keys exactly as written in t3_cfg.safetensors."""
    with torch.device("meta"):
        return schema_from_module(T3(cfg))


def _materialise(cfg: T3Config, tensors: dict[str, torch.Tensor], device, dtype) -> T3:
    with torch.device("meta"):
        model = T3(cfg)
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def load_t3(path: str | Path, cfg: T3Config, device="cpu", dtype=torch.float32) -> T3:
    """Strictly load a reference `t3_cfg.safetensors`; CheckpointError names the file and keys."""
    return _materialise(cfg, read_checkpoint(path, t3_schema(cfg)), device, dtype)


def builtin_t3_weights(cfg: T3Config) -> dict[str, torch.Tensor]:
    """The deterministic random weights (golden recipe); for `tiny` identical to the golden file."""
    return random_checkpoint(t3_schema(cfg))


def build_builtin_t3(cfg: T3Config, device="cpu", dtype=torch.float32) -> T3:
    return _materialise(cfg, builtin_t3_weights(cfg), device, dtype)
