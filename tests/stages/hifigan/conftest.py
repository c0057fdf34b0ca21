"""Shared fixtures for the HiFiGAN stage tests: the golden tiny HiFT loaded once per session."""
from __future__ import annotations

import pytest
import torch

from stages.hifigan import HiFTConfig, load_hift
from tests.golden import GOLDEN_DIR


@pytest.fixture(scope="session")
def tiny_cfg() -> HiFTConfig:
    return HiFTConfig.from_checkpoint_dir(GOLDEN_DIR)


@pytest.fixture(scope="session")
def golden_hift(tiny_cfg):
    return load_hift(GOLDEN_DIR / "s3gen.safetensors", tiny_cfg)


@pytest.fixture(scope="session")
def golden_hift64(golden_hift, tiny_cfg):
    """A float64 copy for exact perturbation tests (no rounding noise)."""
    from stages.hifigan.generator import HiFT

    m = HiFT(tiny_cfg).double()
    m.load_state_dict({k: v.double() for k, v in golden_hift.state_dict().items()})
    return m.eval().requires_grad_(False)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.inference_mode():
        yield
