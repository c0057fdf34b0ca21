"""Shared fixtures for the streaming invariants: the built-in tiny model, loaded once."""
import pytest
import torch

from pipeline.models import ModelSpec
from pipeline.sequential import Engine
from stages.cfm.schedule import ChunkSchedule


@pytest.fixture(scope="session")
def engine():
    torch.set_num_threads(1)  # deterministic reduction order and no oversubscription in CI
    return Engine(ModelSpec(), ChunkSchedule())


def random_tokens(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 6561, (n,), generator=g).tolist()
