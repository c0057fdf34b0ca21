"""Loading `conds.pt` (the built-in voice) safely: torch.load(weights_only=True), never a full unpickle."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stages.common.weights import CheckpointError


def load_conds_part(path: str | Path, part: str, required: dict[str, tuple[int | None, ...]]) -> dict[str, Any]:
    """Return the `part` ("t3" or "gen") dict of a conds.pt file, checked against `required`.

    `required` maps each field to its expected shape, `None` for a free dimension.
    Tensors are returned contiguous (the real file stores some as transposed views).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: conditionals file not found")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(f"{path}: not a readable conditionals file ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not isinstance(data.get(part), dict):
        raise CheckpointError(f"{path}: expected a dict with a {part!r} dict (Conditionals.save format)")
    section = data[part]
    out: dict[str, Any] = {}
    for name, shape in required.items():
        value = section.get(name)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: {part}.{name} is missing or not a tensor")
        if value.ndim != len(shape) or any(w is not None and w != s for w, s in zip(shape, value.shape)):
            want = ["*" if w is None else w for w in shape]
            raise CheckpointError(f"{path}: {part}.{name} has shape {list(value.shape)}, expected {want}")
        out[name] = value.contiguous()
    return out
