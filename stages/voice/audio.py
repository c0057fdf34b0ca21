"""Reference recordings for voice cloning: read with soundfile, mixed to mono float32, checked before any work.

`librosa.load` (what the reference calls) is soundfile's float32 decoding (16-bit PCM ->
sample / 32768), the channel mean, then soxr_hq resampling (stages/voice/resample.py); this
module does the first two and checks the recording. Every problem is a VoiceInputError
naming the file, raised before a model runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.voice.config import VoiceConfig

SILENCE_PEAK_DBFS = -60.0  # a clip whose loudest sample is below this holds no usable speech


class VoiceInputError(ValueError):
    """A recording (or an array) that cannot make a voice; the message names it and the problem."""


@dataclass(frozen=True)
class ReferenceAudio:
    samples: np.ndarray  # [n] float32 mono at sample_rate (cut to max_seconds)
    sample_rate: int  # Hz, as decoded (not yet resampled)
    source: str  # the file path, or a description of the array
    channels: int  # of the input, before mixing to mono
    seconds: float  # duration of the input, before any cut
    notices: tuple[str, ...] = ()  # things the caller should tell the user (e.g. the clip was cut)

    @property
    def used_seconds(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def read_reference(path: str | Path, cfg: VoiceConfig) -> ReferenceAudio:
    """Decode an audio file (WAV, FLAC, OGG, ... anything libsndfile reads) into a checked ReferenceAudio."""
    import soundfile as sf

    p = Path(path)
    name = str(path)
    if p.is_dir():
        raise VoiceInputError(f"{name}: is a directory, not an audio file")
    if not p.is_file():
        raise VoiceInputError(f"{name}: no such file")
    try:
        info = sf.info(name)
    except Exception as e:  # libsndfile's error for anything it cannot parse
        raise VoiceInputError(f"{name}: not an audio file soundfile can read (WAV, FLAC, OGG, ...): {_reason(e)}") from e
    if info.frames <= 0 or info.samplerate <= 0:
        raise VoiceInputError(f"{name}: the file holds no audio samples")
    seconds = info.frames / info.samplerate
    _check_duration(name, seconds, cfg)
    frames, notices = _frames_to_use(name, info.frames, info.samplerate, cfg)
    try:
        data, sr = sf.read(name, frames=frames, dtype="float32", always_2d=True)  # [n, channels]
    except Exception as e:
        raise VoiceInputError(f"{name}: could not decode the audio: {_reason(e)}") from e
    if data.shape[0] == 0:
        raise VoiceInputError(f"{name}: the file holds no audio samples")
    return _finish(name, data, int(sr), seconds, notices)


def reference_from_array(samples, sample_rate: int, cfg: VoiceConfig, source: str = "the audio array") -> ReferenceAudio:
    """A float array [n] or [n, channels] in [-1, 1] at `sample_rate` -> a checked ReferenceAudio."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise VoiceInputError(f"{source}: sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if hasattr(samples, "detach"):  # a torch tensor
        samples = samples.detach().cpu().numpy()
    data = np.asarray(samples)
    if data.dtype.kind != "f":
        raise VoiceInputError(f"{source}: samples must be floating point in [-1, 1], got dtype {data.dtype}")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[1] == 0:
        raise VoiceInputError(f"{source}: expected samples of shape [n] or [n, channels], got {list(data.shape)}")
    if data.shape[0] == 0:
        raise VoiceInputError(f"{source}: holds no audio samples")
    seconds = data.shape[0] / sample_rate
    _check_duration(source, seconds, cfg)
    frames, notices = _frames_to_use(source, data.shape[0], int(sample_rate), cfg)
    return _finish(source, data[:frames].astype(np.float32), int(sample_rate), seconds, notices)


def _check_duration(name: str, seconds: float, cfg: VoiceConfig) -> None:
    if seconds < cfg.min_seconds or (cfg.min_exclusive and seconds <= cfg.min_seconds):
        need = "more than" if cfg.min_exclusive else "at least"
        raise VoiceInputError(f"{name}: is {seconds:.2f} s long; a voice needs {need} {cfg.min_seconds:g} s of speech")


def _frames_to_use(name: str, frames: int, sr: int, cfg: VoiceConfig) -> tuple[int, tuple[str, ...]]:
    limit = int(cfg.max_seconds * sr)
    if frames <= limit:
        return frames, ()
    return limit, (f"{name}: is {frames / sr:.1f} s long; using its first {cfg.max_seconds:g} s "
                   f"(the prompts take the first {cfg.dec_cond_seconds} s, the speaker embedding the whole clip)",)


def _finish(name: str, data: np.ndarray, sr: int, seconds: float, notices: tuple[str, ...]) -> ReferenceAudio:
    """[n, channels] float32 -> mono (the channel mean, as librosa's to_mono), with the NaN and silence checks."""
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise VoiceInputError(f"{name}: holds NaN or infinite samples (first at {first / sr:.3f} s)")
    mono = np.ascontiguousarray(data[:, 0] if data.shape[1] == 1 else data.T.mean(axis=0), dtype=np.float32)
    peak = float(np.max(np.abs(mono)))
    peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf
    if peak_db < SILENCE_PEAK_DBFS:
        raise VoiceInputError(f"{name}: is silent (peak {peak_db:.1f} dBFS, below {SILENCE_PEAK_DBFS:g} dBFS); "
                              "a voice needs a recording of speech")
    return ReferenceAudio(mono, sr, name, data.shape[1], seconds, notices)


def _reason(e: Exception) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
