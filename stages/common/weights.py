"""Checkpoint tensors: strict safetensors loading against a declared schema, and the built-in random weights.

Every stage declares the checkpoint keys it needs as a *schema* (key as written in the
checkpoint file -> shape and init branch). Real weights are read from the file and
checked against the schema; the built-in random-weight model is made from the same
schema with the golden fixtures' deterministic recipe, so the built-in `tiny` model is
bit-identical to the reference's tiny test checkpoint and identical on every machine.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

# Init branches of the recipe (see tests/data/golden_tiny/README.md, "Weight recipe").
MATRIX = "matrix"  # ndim >= 2: randn / sqrt(fan_in), fan_in = numel / shape[0]
VECTOR = "vector"  # ndim <= 1 (biases, 1-D params): 0.02 * randn
NORM_WEIGHT = "norm_weight"  # .weight of a LayerNorm / RMSNorm / GroupNorm / BatchNorm: 1 + 0.02 * randn
BN_RUNNING_MEAN = "bn_running_mean"  # BatchNorm running_mean: 0.1 * randn
BN_RUNNING_VAR = "bn_running_var"  # BatchNorm running_var: 1 + 0.1 * rand
COUNTER = "counter"  # integer buffers (BatchNorm num_batches_tracked): stored as int64, made as 0, unused in eval
BRANCHES = (MATRIX, VECTOR, NORM_WEIGHT, BN_RUNNING_MEAN, BN_RUNNING_VAR, COUNTER)


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, or does not match the model's schema."""


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    branch: str  # one of BRANCHES


Schema = Mapping[str, TensorSpec]


def deterministic_tensor(key: str, shape: Iterable[int], branch: str, salt: bytes = b"") -> torch.Tensor:
    """The golden recipe: a float32 tensor that is a pure function of (salt, key, shape, branch)."""
    shape = tuple(int(s) for s in shape)
    g = torch.Generator().manual_seed(zlib.crc32(salt + key.encode("utf-8")))
    if branch == NORM_WEIGHT:
        return 1 + 0.02 * torch.randn(shape, generator=g)
    if branch == VECTOR:
        return 0.02 * torch.randn(shape, generator=g)
    if branch == BN_RUNNING_MEAN:
        return 0.1 * torch.randn(shape, generator=g)
    if branch == BN_RUNNING_VAR:
        return 1 + 0.1 * torch.rand(shape, generator=g)
    if branch == COUNTER:
        return torch.zeros(shape, dtype=torch.int64)
    if branch == MATRIX:
        fan_in = math.prod(shape) / shape[0]
        return torch.randn(shape, generator=g) * (1 / math.sqrt(fan_in))
    raise ValueError(f"unknown init branch {branch!r}")


def random_checkpoint(schema: Schema, gains: Mapping[str, float] | None = None, salt: bytes = b"") -> dict[str, torch.Tensor]:
    """Make every tensor of `schema` with the deterministic recipe (the built-in model's weights)."""
    gains = gains or {}
    out = {k: deterministic_tensor(k, s.shape, s.branch, salt) for k, s in schema.items()}
    return {k: t * gains[k] if k in gains else t for k, t in out.items()}


def is_norm_module(module: nn.Module) -> bool:
    """Norm layers get the `norm_weight` branch for their `.weight`."""
    if getattr(module, "is_norm", False):  # our own norm classes (e.g. RMSNorm) set this
        return True
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.RMSNorm))


def schema_from_module(module: nn.Module, prefix: str = "") -> dict[str, TensorSpec]:
    """Schema of a module's persistent state dict, keys prefixed by `prefix` (e.g. "flow.")."""
    owners = dict(module.named_modules())
    schema: dict[str, TensorSpec] = {}
    for name, tensor in module.state_dict().items():
        owner_name, _, leaf = name.rpartition(".")
        owner = owners.get(owner_name, module)
        is_bn = isinstance(owner, nn.modules.batchnorm._BatchNorm)
        if leaf == "weight" and is_norm_module(owner):
            branch = NORM_WEIGHT
        elif is_bn and leaf in ("running_mean", "running_var", "num_batches_tracked"):
            branch = {"running_mean": BN_RUNNING_MEAN, "running_var": BN_RUNNING_VAR}.get(leaf, COUNTER)
        elif tensor.ndim <= 1:
            branch = VECTOR
        else:
            branch = MATRIX
        schema[prefix + name] = TensorSpec(tuple(tensor.shape), branch)
    return schema


def read_checkpoint(
    path: str | Path,
    schema: Schema,
    ignore_prefixes: tuple[str, ...] = (),
    only_prefixes: tuple[str, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Read the tensors of `schema` from a safetensors file, strictly.

    Keys under `ignore_prefixes` are skipped (parts of the file another stage or a later
    feature owns). When `only_prefixes` is given, keys outside them are skipped too (a
    stage that loads only its part of a shared file). Everything else must match the
    schema exactly: missing keys, unexpected keys and wrong shapes are all reported in
    one CheckpointError naming the file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    tensors: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            for key in keys:
                if key.startswith(ignore_prefixes) if ignore_prefixes else False:
                    continue
                if only_prefixes is not None and not key.startswith(only_prefixes):
                    continue
                if key not in schema:
                    problems.append(f"unexpected key {key}")
                    continue
                t = f.get_tensor(key)
                want = schema[key].shape
                if tuple(t.shape) != want:
                    problems.append(f"{key}: shape {list(t.shape)} but the model needs {list(want)}")
                elif schema[key].branch == COUNTER:
                    if t.is_floating_point() or t.is_complex():
                        problems.append(f"{key}: dtype {t.dtype} is not an integer type")
                    else:
                        tensors[key] = t.long()
                elif not t.is_floating_point():
                    problems.append(f"{key}: dtype {t.dtype} is not a floating-point type")
                else:
                    tensors[key] = t.float()
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    missing = sorted(k for k in schema if k not in tensors and not any(p.startswith(k + ":") for p in problems))
    problems.extend(f"missing key {k}" for k in missing)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointError(f"{path}: checkpoint does not match the model ({len(problems)} problem(s)):\n  {shown}{more}")
    return tensors


def strip_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop `prefix` from every key that has it (checkpoint keys -> module state-dict keys)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
