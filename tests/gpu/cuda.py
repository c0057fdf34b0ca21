"""The `gpu` marker's skip: tests that need a CUDA device skip on a machine without one, saying so.

benchmarks/gpu_check.sh runs them on a GPU machine (`pytest -m gpu`); on CPU CI they are the
one allowed skip.
"""
import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs CUDA (a GPU); run by benchmarks/gpu_check.sh on a GPU machine")
GPU = [pytest.mark.gpu, needs_cuda]
