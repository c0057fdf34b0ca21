"""Shared fixtures for the T3 tests: the golden tiny checkpoint loaded once per session, a fresh tick per test."""
from __future__ import annotations

import pytest

from tests.golden import GOLDEN_DIR


@pytest.fixture(scope="session")
def tiny_cfg():
    from stages.t3.config import T3Config

    return T3Config.from_name("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    from stages.t3.checkpoint import load_t3

    return load_t3(GOLDEN_DIR / "t3_cfg.safetensors", tiny_cfg)


@pytest.fixture()
def tiny_batch(tiny_model, tiny_cfg):
    from stages.t3.generate import new_t3_batch

    return new_t3_batch(tiny_model, tiny_cfg, max_slots=2, max_len=160)


