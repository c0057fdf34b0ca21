"""HiFT weights: the checkpoint schema (weight-norm key form), strict loading with folding, built-in weights.

Used by the HiFiGAN stage at start-up. The released `s3gen.safetensors` stores every
weight-normed conv as `<name>.parametrizations.weight.original0` (g, [dim0, 1, 1]) and
`...original1` (v); the model keeps plain weights, folded once here: w = g * v / ||v||,
the norm taken over every dim except 0 (torch's weight_norm default dim=0, which for a
ConvTranspose1d weight [C_in, C_out, k] means per *input* channel).
"""
from __future__ import annotations

from pathlib import Path

import torch

from stages.common.weights import MATRIX, TensorSpec, random_checkpoint, read_checkpoint, schema_from_module, strip_prefix

from .config import HiFTConfig
from .generator import HiFT

PREFIX = "mel2wav."  # HiFT's keys inside s3gen.safetensors
OTHER_PREFIXES = ("flow.", "tokenizer.", "speaker_encoder.")  # parts of s3gen.safetensors other stages own
G_SUFFIX = ".parametrizations.weight.original0"  # weight-norm magnitude g
V_SUFFIX = ".parametrizations.weight.original1"  # weight-norm direction v
# Golden recipe exception: the classifier weight is scaled so that predicted f0 is voiced (README "Gain exception").
BUILTIN_GAINS = {"mel2wav.f0_predictor.classifier.weight": 400.0}


def weight_normed_modules(model: HiFT) -> list[str]:
    """Module names (state-dict form) whose `.weight` is stored as a (g, v) pair."""
    return [name for name, m in model.named_modules() if getattr(m, "weight_normed", False)]


def hift_schema(cfg: HiFTConfig) -> dict[str, TensorSpec]:
    """Checkpoint keys (with the `mel2wav.` prefix, weight-norm form) -> shape and init branch."""
    with torch.device("meta"):
        model = HiFT(cfg)
    plain = schema_from_module(model, PREFIX)
    schema: dict[str, TensorSpec] = {}
    wn = {PREFIX + n + ".weight" for n in weight_normed_modules(model)}
    for key, spec in plain.items():
        if key in wn:
            stem = key[: -len(".weight")]
            g_shape = (spec.shape[0],) + (1,) * (len(spec.shape) - 1)  # one g per slice of dim 0
            schema[stem + G_SUFFIX] = TensorSpec(g_shape, MATRIX)  # >= 2-D so the recipe's "matrix", fan_in 1
            schema[stem + V_SUFFIX] = TensorSpec(spec.shape, MATRIX)
        else:
            schema[key] = spec
    return schema


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """w = g * v / ||v||, norm over all dims but 0 (torch.nn.utils.parametrizations.weight_norm, dim=0)."""
    if hasattr(torch, "_weight_norm"):  # the exact kernel the reference's parametrization runs
        return torch._weight_norm(v, g, 0)
    norm = v.flatten(1).norm(dim=1).view(g.shape)  # [C, 1, 1]
    return v * (g / norm)


def model_state_from_checkpoint(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint tensors (mel2wav.* keys) -> HiFT state dict (plain, folded weights)."""
    flat = strip_prefix(tensors, PREFIX)
    state: dict[str, torch.Tensor] = {}
    for key, t in flat.items():
        if key.endswith(G_SUFFIX):
            stem = key[: -len(G_SUFFIX)]
            state[stem + ".weight"] = fold_weight_norm(t, flat[stem + V_SUFFIX])
        elif not key.endswith(V_SUFFIX):
            state[key] = t
    return state


def hift_from_checkpoint_tensors(tensors: dict[str, torch.Tensor], cfg: HiFTConfig) -> HiFT:
    model = HiFT(cfg)
    model.load_state_dict(model_state_from_checkpoint(tensors), strict=True)
    return model.eval().requires_grad_(False)


def load_hift(s3gen_safetensors_path: str | Path, cfg: HiFTConfig) -> HiFT:
    """Load mel2wav.* of an s3gen.safetensors strictly (CheckpointError names the file and keys)."""
    tensors = read_checkpoint(s3gen_safetensors_path, hift_schema(cfg), ignore_prefixes=OTHER_PREFIXES)
    return hift_from_checkpoint_tensors(tensors, cfg)


def builtin_checkpoint(cfg: HiFTConfig) -> dict[str, torch.Tensor]:
    """The deterministic random weights in checkpoint form (tiny: bit-identical to golden mel2wav.*)."""
    return random_checkpoint(hift_schema(cfg), BUILTIN_GAINS)


def build_builtin_hift(cfg: HiFTConfig) -> HiFT:
    return hift_from_checkpoint_tensors(builtin_checkpoint(cfg), cfg)
