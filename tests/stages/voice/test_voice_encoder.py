"""Golden `voice_encoder`: librosa trim, 40-band power mel, partials, LSTM, averaging and L2 norm."""
from __future__ import annotations

import pytest
import torch

from stages.voice.voice_encoder import partial_windows
from tests.golden import load_case, rel_l2, tolerance

CASE = "voice_encoder"


@pytest.fixture(scope="module")
def case():
    return load_case(CASE)


@pytest.fixture(scope="module")
def run(golden_models, case):
    trace = {}
    emb = golden_models.voice_encoder.embed(case["wav"].numpy(), trace)
    return emb, trace


def test_trim_interval_is_exact(run, case):
    assert torch.equal(run[1]["trim_interval"], case["trim_interval"])


@pytest.mark.parametrize("name", ["mel", "partials", "partial_embeds"])
def test_intermediates(run, case, name):
    assert rel_l2(run[1][name], case[name]) < tolerance(CASE)


def test_speaker_embedding(run, case):
    emb = run[0]
    assert emb.shape == (1, 256) and emb.dtype == torch.float32
    assert rel_l2(emb, case["speaker_emb"]) < tolerance(CASE)
    assert abs(float(emb.norm()) - 1.0) < 1e-6


@pytest.mark.parametrize("frames,expected", [(1, (1, 160)), (160, (1, 160)), (204, (1, 160)), (205, (2, 237)),
                                             (257, (2, 237)), (281, (2, 237)), (282, (3, 314))])
def test_partials_cover_the_utterance_as_the_reference(tiny_cfg, frames, expected):
    """160-frame windows every 77 frames; a last window is kept (zero-padded) when >= 80 % of it is audio."""
    assert partial_windows(frames, tiny_cfg.ve) == expected
