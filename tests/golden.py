"""Access to the golden fixtures copied from ../shared/golden/tiny (reference outputs, random weights)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

GOLDEN_DIR = Path(__file__).parent / "data" / "golden_tiny"


@lru_cache(maxsize=None)
def cases() -> dict:
    return json.loads((GOLDEN_DIR / "cases.json").read_text())["cases"]


@lru_cache(maxsize=None)
def config() -> dict:
    return json.loads((GOLDEN_DIR / "config.json").read_text())


def load_case(name: str) -> dict[str, torch.Tensor]:
    """The tensors of one case (inputs, intermediates, outputs)."""
    from safetensors.torch import load_file

    return load_file(str(GOLDEN_DIR / f"{name}.safetensors"))


def tolerance(case: str, tensor: str | None = None) -> float:
    """The README's recommended rel-L2 tolerance for a case (per-tensor override when given)."""
    tol = cases()[case]["tolerance"]
    per = tol.get("per_tensor", {}) if isinstance(tol, dict) else {}
    if tensor is not None and isinstance(per.get(tensor), (int, float)):
        return float(per[tensor])
    return float(tol["rel_l2"]) if isinstance(tol, dict) else float(tol)


def rel_l2(mine: torch.Tensor, ref: torch.Tensor) -> float:
    """||mine - ref|| / ||ref|| in float64 (the fixtures' metric)."""
    assert tuple(mine.shape) == tuple(ref.shape), f"shape {tuple(mine.shape)} != reference {tuple(ref.shape)}"
    a, b = mine.detach().double().cpu(), ref.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))
