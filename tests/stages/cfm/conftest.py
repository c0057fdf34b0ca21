"""Shared fixtures of the CFM-stage tests: the golden tiny flow (loaded once per session)."""
from __future__ import annotations

import pytest
import torch

from stages.cfm import CFMConfig, FlowConditionals, load_flow
from tests.golden import GOLDEN_DIR, load_case

S3GEN = GOLDEN_DIR / "s3gen.safetensors"


@pytest.fixture(scope="session")
def tiny_cfg() -> CFMConfig:
    return CFMConfig.from_name("tiny")


@pytest.fixture(scope="session")
def golden_flow(tiny_cfg):
    return load_flow(S3GEN, tiny_cfg)


@pytest.fixture(scope="session")
def flow_case() -> dict[str, torch.Tensor]:
    return load_case("flow_encoder")


@pytest.fixture(scope="session")
def cfm_case() -> dict[str, torch.Tensor]:
    return load_case("cfm")


@pytest.fixture(scope="session")
def golden_conds(flow_case) -> FlowConditionals:
    return FlowConditionals(flow_case["prompt_token"], flow_case["prompt_feat"], flow_case["embedding"])
