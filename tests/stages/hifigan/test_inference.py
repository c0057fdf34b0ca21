"""Whole-utterance inference: lengths, seeded randomness, the chunkable source and its phase carry."""
from __future__ import annotations

import pytest
import torch

from stages.hifigan import HiFTConfig, N_TRIM, apply_trim_fade, trim_fade
from tests.golden import GOLDEN_DIR, load_case


@pytest.mark.parametrize("frames", [1, 2, 7, 24])
def test_output_length_is_exactly_frames_times_480(golden_hift, frames):
    mel = torch.randn(1, 80, frames)
    wav, source = golden_hift.inference(mel, torch.Generator().manual_seed(frames))
    assert wav.shape == (1, frames * 480) and source.shape == (1, 1, frames * 480)
    assert wav.abs().max() <= 0.99


def test_same_seed_same_audio_and_global_rng_untouched(golden_hift):
    mel = load_case("hift")["mel"]
    before = torch.get_rng_state()
    a, sa = golden_hift.inference(mel, torch.Generator().manual_seed(7))
    b, sb = golden_hift.inference(mel, torch.Generator().manual_seed(7))
    c, _ = golden_hift.inference(mel, torch.Generator().manual_seed(8))
    assert torch.equal(before, torch.get_rng_state())
    assert torch.equal(a, b) and torch.equal(sa, sb)
    assert not torch.equal(a, c)


def test_source_in_chunks_with_carry_equals_whole(golden_hift):
    case = load_case("hift")
    f0 = golden_hift.upsample_f0(case["f0"])  # [1, S]
    phase, noise = case["phase"], case["sine_noise"]
    whole, end_whole = golden_hift.source_from_f0(f0, phase, noise)
    pieces, carry = [], None
    bounds = [0, 480, 1000, 5281, 9600, f0.shape[-1]]  # whole frames and odd offsets alike
    for lo, hi in zip(bounds, bounds[1:]):
        piece, carry = golden_hift.source_from_f0(f0[:, lo:hi], phase, noise[..., lo:hi], carry)
        pieces.append(piece)
    chunked = torch.cat(pieces, dim=-1)
    err = ((chunked - whole).double().norm() / whole.double().norm()).item()
    assert err < 1e-5
    assert torch.allclose(carry, end_whole, atol=1e-9)


def test_noise_drawn_per_frame_equals_noise_drawn_whole(golden_hift):
    g = torch.Generator().manual_seed(3)
    phase = golden_hift.draw_start_phase(g)
    whole = golden_hift.draw_noise(12 * 480, g)
    g2 = torch.Generator().manual_seed(3)
    assert torch.equal(golden_hift.draw_start_phase(g2), phase)
    pieces = [golden_hift.draw_noise(n * 480, g2) for n in (1, 4, 2, 5)]
    assert torch.equal(torch.cat(pieces, dim=-1), whole)


def test_decode_rejects_wrong_source_length(golden_hift):
    with pytest.raises(ValueError, match="need 1440"):
        golden_hift.decode(torch.zeros(1, 80, 3), torch.zeros(1, 1, 1000))


def test_trim_fade_shape_and_streaming_offsets():
    fade = trim_fade()
    assert fade.shape == (2 * N_TRIM,)
    assert fade[:N_TRIM].abs().max() == 0 and fade[N_TRIM] == 0 and fade[-1] == 1
    wav = torch.randn(1, 3000)
    whole = apply_trim_fade(wav)
    parts = [apply_trim_fade(wav[:, lo:hi], lo) for lo, hi in [(0, 500), (500, 700), (700, 3000)]]
    assert torch.equal(torch.cat(parts, dim=-1), whole)
    assert torch.equal(whole[:, 960:], wav[:, 960:])


def test_presets_and_config_loading(tmp_path):
    assert HiFTConfig.from_name("chatterbox").base_channels == 512
    assert HiFTConfig.from_name("tiny") == HiFTConfig.from_checkpoint_dir(GOLDEN_DIR)
    assert HiFTConfig.from_checkpoint_dir(tmp_path) == HiFTConfig.from_name("chatterbox")
    assert HiFTConfig.from_name("small").hop_samples == 480
    with pytest.raises(ValueError, match="unknown HiFT preset"):
        HiFTConfig.from_name("huge")
