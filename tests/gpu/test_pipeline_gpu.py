"""The three-process pipeline on one GPU: graphs vs eager give the same audio within 1e-5 (fp32) / 1e-3 (bf16)
relative, with exact sample counts; the CUDA IPC hand-off gives the byte path's audio."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.api import Pipeline
from pipeline.launcher import PipelineConfig
from stages.common.spec import ModelSpec
from tests.gpu.cuda import GPU

pytestmark = GPU
BOUND = {"float32": 1e-5, "bfloat16": 1e-3}
TEXTS = ["Hello there, this is a test.", "A second, somewhat longer sentence to synthesize on the GPU."]


def synth(dtype: str, options: dict) -> list[np.ndarray]:
    config = PipelineConfig(model=ModelSpec(device="cuda", dtype=dtype), max_inflight=4, threads=2, stage_options=options)
    with Pipeline(config) as tts:
        return [tts.synthesize(t, seed=11 + i, max_new_tokens=40 + 20 * i, ignore_eos=True) for i, t in enumerate(TEXTS)]


def rel(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_graphs_audio_equals_eager_audio(dtype):
    eager = synth(dtype, {"cuda_graphs": False})
    graphs = synth(dtype, {"cuda_graphs": True, "cuda_ipc": True})
    for i, (g, e) in enumerate(zip(graphs, eager, strict=True)):
        assert g.size == e.size == 960 * (40 + 20 * i)
        assert rel(g, e) < BOUND[dtype], i
