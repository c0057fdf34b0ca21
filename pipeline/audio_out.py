"""Where audio goes: raw PCM to a stream (stdout), or a file written chunk by chunk (.wav/.flac via soundfile, .raw)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

FORMATS = ("s16le", "f32le")
INT16_SCALE = 32767  # float [-1, 1] -> int16 full scale
FILE_SUBTYPES = {"s16le": "PCM_16", "f32le": "FLOAT"}


def to_bytes(pcm: np.ndarray, fmt: str) -> bytes:
    """float32 [-1, 1] samples -> little-endian raw bytes in `fmt`."""
    if fmt == "f32le":
        return np.asarray(pcm, dtype="<f4").tobytes()
    return np.clip(np.rint(np.asarray(pcm, np.float32) * INT16_SCALE), -32768, 32767).astype("<i2").tobytes()


class AudioWriter:
    """Writes every chunk as it comes and flushes it, so a player or pipe hears it at once."""

    def __init__(self, fmt: str, sample_rate: int, path: str | None = None, stream: BinaryIO | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.fmt, self.sample_rate, self.samples = fmt, sample_rate, 0
        self._file = None
        self._raw: BinaryIO | None = None
        if path is None:
            self._raw = stream or sys.stdout.buffer
        else:
            suffix = Path(path).suffix.lower()
            if suffix == ".raw":
                self._raw = open(path, "wb")
                self._owns_raw = True
            elif suffix in (".wav", ".flac"):
                import soundfile

                subtype = FILE_SUBTYPES[fmt] if suffix == ".wav" else "PCM_16"  # FLAC has no float samples
                self._file = soundfile.SoundFile(path, "w", samplerate=sample_rate, channels=1, subtype=subtype)
            else:
                raise ValueError(f"output file must end in .wav, .flac or .raw, got {path!r}")

    def write(self, pcm: np.ndarray) -> None:
        if self._file is not None:
            if self._file.subtype == "PCM_16":  # our rounding, so a .wav holds exactly the s16le stream's samples
                self._file.write(np.frombuffer(to_bytes(pcm, "s16le"), dtype="<i2"))
            else:
                self._file.write(np.asarray(pcm, np.float32))
            self._file.flush()
        else:
            self._raw.write(to_bytes(pcm, self.fmt))
            self._raw.flush()
        self.samples += len(pcm)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        elif self._raw is not None and getattr(self, "_owns_raw", False):
            self._raw.close()
        elif self._raw is not None:
            self._raw.flush()
