"""Fixtures shared by the stage tests."""
import pytest
import torch


@pytest.fixture()
def one_thread():
    """Bit-identity across batch compositions is a property of 1-thread CPU kernels (docs/t3.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
