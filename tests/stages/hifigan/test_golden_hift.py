"""HiFT against the reference's golden `hift` and `s3gen_e2e` cases (injected phase and noise)."""
from __future__ import annotations

import pytest
import torch

from stages.hifigan import apply_trim_fade
from tests.golden import load_case, rel_l2, tolerance


@pytest.fixture(scope="module")
def case():
    return load_case("hift")


def test_f0(golden_hift, case):
    f0 = golden_hift.predict_f0(case["mel"])
    assert rel_l2(f0, case["f0"]) <= tolerance("hift", "f0")


def test_source_and_sine_merge(golden_hift, case):
    f0 = golden_hift.upsample_f0(case["f0"])  # [1, T*480]
    assert f0.shape == (1, case["mel"].shape[-1] * 480)
    source, cycles_end = golden_hift.source_from_f0(f0, case["phase"], case["sine_noise"])
    assert source.shape == case["source"].shape and cycles_end.shape == (1, 9, 1)
    assert rel_l2(source, case["source"]) <= tolerance("hift", "source")
    assert rel_l2(source.transpose(1, 2), case["sine_merge"]) <= tolerance("hift", "sine_merge")


def test_source_from_given_f0_and_uv(golden_hift, case):
    f0 = golden_hift.upsample_f0(case["f0_given"])
    source, _ = golden_hift.source_from_f0(f0, case["phase"], case["sine_noise"])
    assert rel_l2(source.transpose(1, 2), case["source_from_f0_given"]) <= tolerance("hift", "source_from_f0_given")
    uv = golden_hift.voiced(f0)[..., None]  # [1, S, 1]
    assert torch.equal(uv, case["uv_from_f0_given"])


def test_inference_wav(golden_hift, case):
    wav, source = golden_hift.inference_given(case["mel"], case["phase"], case["sine_noise"])
    assert wav.shape == case["wav"].shape
    assert rel_l2(wav, case["wav"]) <= tolerance("hift", "wav")
    assert rel_l2(source, case["source"]) <= tolerance("hift", "source")


def test_wav_cached_source(golden_hift, case):
    # The reference's cache_source overwrites the head of the source after it was generated.
    _, source = golden_hift.inference_given(case["mel"], case["phase"], case["sine_noise"])
    cached = source.clone()
    cached[..., : case["cache_source"].shape[-1]] = case["cache_source"]
    assert rel_l2(cached, case["source_cached"]) <= tolerance("hift", "source_cached")
    assert rel_l2(golden_hift.decode(case["mel"], cached), case["wav_cached"]) <= tolerance("hift", "wav_cached")


def test_decode_fixed_source(golden_hift, case):
    wav = golden_hift.decode(case["mel"], case["fixed_source"])
    assert rel_l2(wav, case["wav_decode_fixed_source"]) <= tolerance("hift", "wav_decode_fixed_source")


def test_s3gen_e2e_vocoder_part_and_trim_fade(golden_hift):
    e2e = load_case("s3gen_e2e")
    wav, source = golden_hift.inference_given(e2e["mel"], e2e["phase"], e2e["sine_noise"])
    assert rel_l2(wav, e2e["wav_before_trim_fade"]) <= tolerance("s3gen_e2e", "wav_before_trim_fade")
    assert rel_l2(source, e2e["source"]) <= tolerance("s3gen_e2e", "source")
    # trim_fade on the reference's own pre-fade wav reproduces its final wav exactly.
    assert torch.equal(apply_trim_fade(e2e["wav_before_trim_fade"]), e2e["wav"])
