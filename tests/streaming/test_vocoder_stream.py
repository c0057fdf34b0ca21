"""Vocoder streaming: chunked equals whole (including the last frames), exact sample counts, fade only at the start."""
import pytest
import torch

from stages.hifigan.fade import apply_trim_fade
from stages.hifigan.streaming import VocoderStream
from tests.golden import load_case


@pytest.fixture(scope="module")
def mel():
    m = load_case("hift")["mel"]  # [1, 80, 24] a real (standardised) log-mel
    return torch.cat([m, m.flip(-1), m], dim=-1)[0]  # [80, 72]


def whole(hift, mel, seed):
    wav, _ = hift.inference(mel[None], torch.Generator().manual_seed(seed))
    return apply_trim_fade(wav[0])


@pytest.mark.parametrize("chunk", [1, 2, 7, 50])
def test_streamed_vocoder_equals_whole(engine, mel, chunk):
    ref = whole(engine.hift, mel, 11)
    vs = VocoderStream(engine.hift, torch.Generator().manual_seed(11))
    out = []
    for i in range(0, mel.shape[1], chunk):
        out += vs.push(mel[:, i : i + chunk])
    out += vs.finish()
    starts = [c.start for c in out]
    assert starts[0] == 0 and all(c.start + c.pcm.numel() == d.start for c, d in zip(out, out[1:]))
    y = torch.cat([c.pcm for c in out])
    assert y.numel() == 480 * mel.shape[1] == ref.numel()
    rel = float((y - ref).norm() / ref.norm())
    assert rel < 1e-4, rel
    tail = slice(-480 * 3, None)  # the last frames: a truncated cache would lose or change these
    assert float((y[tail] - ref[tail]).norm() / ref[tail].norm()) < 1e-4


def test_vocoder_end_flushes_and_empty_stream(engine, mel):
    vs = VocoderStream(engine.hift, torch.Generator().manual_seed(0))
    during = vs.push(mel[:, :10])  # fewer frames than the holdback: nothing final yet
    assert during == []
    final = vs.finish()
    assert sum(c.pcm.numel() for c in final) == 4800
    empty = VocoderStream(engine.hift, torch.Generator().manual_seed(0))
    assert empty.finish() == [] and empty.samples_emitted == 0
