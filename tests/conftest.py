"""Fixtures for the whole suite."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _torch_threads_restored_per_module():
    """A module whose fixtures set this process's torch thread count (to match the 1-thread stages) leaves it as found."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test leaves the torch thread count as it found it: results computed in the test process (a voice made
    from a file, an offline reference) depend on it, and later tests compare them with other processes'."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
