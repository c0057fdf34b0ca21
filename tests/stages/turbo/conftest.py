"""Shared fixtures of the Turbo tests: the golden turbo-tiny checkpoint, rebuilt once per session."""
from __future__ import annotations

import pytest

from tests.golden_turbo import write_turbo_checkpoint


@pytest.fixture(scope="session")
def turbo_dir(tmp_path_factory):
    """A complete Turbo checkpoint folder equal to the golden one (see tests/golden_turbo.py)."""
    return write_turbo_checkpoint(tmp_path_factory.mktemp("turbo") / "ckpt")


@pytest.fixture(scope="session")
def t3_cfg():
    from stages.t3.turbo_config import TurboT3Config

    return TurboT3Config.from_name("turbo-tiny")


@pytest.fixture(scope="session")
def golden_t3(turbo_dir, t3_cfg):
    from stages.t3.turbo_checkpoint import load_turbo_t3

    return load_turbo_t3(turbo_dir / "t3_turbo_v1.safetensors", t3_cfg)


@pytest.fixture()
def turbo_gen(golden_t3, t3_cfg):
    from stages.t3.turbo_generate import TurboT3Generator

    return TurboT3Generator(golden_t3, t3_cfg, max_slots=3, max_len=512)


@pytest.fixture(scope="session")
def meanflow_cfg():
    from stages.cfm.meanflow import meanflow_config

    return meanflow_config("turbo-tiny")


@pytest.fixture(scope="session")
def golden_meanflow(turbo_dir, meanflow_cfg):
    from stages.cfm.meanflow import load_meanflow_flow

    return load_meanflow_flow(turbo_dir / "s3gen_meanflow.safetensors", meanflow_cfg)


@pytest.fixture(scope="session")
def turbo_engine(turbo_dir):
    from pipeline.models import ModelSpec
    from pipeline.turbo import TurboEngine

    return TurboEngine(ModelSpec(checkpoint=turbo_dir))
