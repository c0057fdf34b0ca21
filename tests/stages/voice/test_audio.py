"""Reading reference recordings: formats, channel mixing, and each bad input's error (naming the file)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from stages.voice.audio import VoiceInputError, read_reference, reference_from_array
from stages.voice.config import VoiceConfig

SR = 24000


def speech_like(seconds: float, sr: int = SR, channels: int = 1) -> np.ndarray:
    """A voiced-sounding test signal [n, channels] (two harmonics, slow amplitude wobble)."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * (np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def cfg():
    return VoiceConfig.from_name("tiny")


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS"), ("WAV", "FLOAT")])
def test_formats_decode_to_mono_float32(cfg, tmp_path, fmt, subtype):
    path = tmp_path / f"ref.{fmt.lower()}"
    sf.write(str(path), speech_like(1.5), SR, format=fmt, subtype=subtype)
    audio = read_reference(path, cfg)
    assert audio.samples.dtype == np.float32 and audio.samples.shape == (int(1.5 * SR),)
    assert audio.sample_rate == SR and audio.channels == 1 and audio.notices == ()


def test_pcm16_reads_as_sample_over_32768(cfg, tmp_path):
    pcm = (speech_like(1.2)[:, 0] * 32767).astype(np.int16)
    sf.write(str(tmp_path / "a.wav"), pcm, SR, subtype="PCM_16")
    assert np.array_equal(read_reference(tmp_path / "a.wav", cfg).samples, pcm.astype(np.float32) / 32768)


def test_stereo_is_the_channel_mean(cfg, tmp_path):
    x = speech_like(1.2, sr=44100, channels=2)
    sf.write(str(tmp_path / "s.wav"), x, 44100, subtype="FLOAT")
    audio = read_reference(tmp_path / "s.wav", cfg)
    assert audio.channels == 2 and np.array_equal(audio.samples, x.T.mean(axis=0))


def test_quiet_speech_is_not_silence(cfg, tmp_path):
    sf.write(str(tmp_path / "q.wav"), quiet(1.5, -50.0), SR, subtype="FLOAT")
    assert read_reference(tmp_path / "q.wav", cfg).channels == 1


def test_too_long_is_cut_with_a_notice(tmp_path):
    cfg = VoiceConfig(max_seconds=2.0)
    sf.write(str(tmp_path / "long.wav"), speech_like(3.0), SR)
    audio = read_reference(tmp_path / "long.wav", cfg)
    assert audio.samples.shape == (2 * SR,) and audio.seconds == 3.0
    assert len(audio.notices) == 1 and "long.wav: is 3.0 s long; using its first 2 s" in audio.notices[0]


def quiet(seconds: float, peak_dbfs: float) -> np.ndarray:
    x = speech_like(seconds)
    return (x / np.abs(x).max() * 10 ** (peak_dbfs / 20)).astype(np.float32)


def write(path, data, sr=SR, **kw):
    sf.write(str(path), data, sr, **kw)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda p: p, "no such file"),
    (lambda p: (p.mkdir(), p)[1], "is a directory, not an audio file"),
    (lambda p: (p.write_bytes(b"hello, I am text, not sound"), p)[1], "not an audio file soundfile can read"),
    (lambda p: (p.write_bytes(b""), p)[1], "not an audio file soundfile can read"),
    (lambda p: write(p, np.zeros((0, 1), np.float32)), "holds no audio samples"),
    (lambda p: write(p, speech_like(0.5)), "is 0.50 s long; a voice needs at least 1 s of speech"),
    (lambda p: write(p, np.zeros((SR * 2, 1), np.float32)), "is silent (peak -inf dBFS"),
    (lambda p: write(p, quiet(2.0, -70.0), subtype="FLOAT"), "is silent (peak -70.0 dBFS, below -60 dBFS)"),
    (lambda p: write(p, np.where(np.arange(2 * SR)[:, None] == SR, np.nan, speech_like(2.0)), subtype="FLOAT"),
     "holds NaN or infinite samples (first at 1.000 s)"),
])
def test_bad_recordings_are_named_errors(cfg, tmp_path, make, message):
    path = make(tmp_path / "ref.wav")
    with pytest.raises(VoiceInputError) as e:
        read_reference(path, cfg)
    assert str(e.value).startswith(str(path) + ": ") and message in str(e.value)


@pytest.mark.parametrize("samples,sr,message", [
    (np.zeros(SR * 2, np.int16), SR, "must be floating point"),
    (speech_like(2.0), 0, "sample_rate must be a positive integer"),
    (speech_like(2.0), 24000.0, "sample_rate must be a positive integer"),
    (np.zeros((2, 3, 4), np.float32), SR, "expected samples of shape [n] or [n, channels]"),
    (speech_like(0.2), SR, "is 0.20 s long"),
    (np.full(SR * 2, np.inf, np.float32), SR, "holds NaN or infinite samples"),
])
def test_bad_arrays_are_named_errors(cfg, samples, sr, message):
    with pytest.raises(VoiceInputError, match="^the audio array: ") as e:
        reference_from_array(samples, sr, cfg)
    assert message in str(e.value)
