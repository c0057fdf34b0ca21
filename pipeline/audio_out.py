"""Where audio goes: raw PCM or an audio file format, to stdout or a file, written and flushed chunk by chunk.

Formats (`--format`): raw `s16le` / `f32le`, and the containers `wav`, `flac`, `ogg`
(Vorbis), `opus` (Ogg Opus) and `mp3`, encoded by libsndfile through soundfile where the
installed libsndfile can (checked at run time; otherwise a clear error).

Rules:
- A file's container comes from its suffix (`.wav .flac .ogg .oga .opus .mp3 .raw`); a
  container `--format` must agree with it. `s16le` / `f32le` choose the sample format of
  raw output and of WAV (PCM_16 / FLOAT). FLAC holds integer samples and the lossy codecs
  have no sample format, so `--format f32le` with them is an error, never a silent
  16-bit file.
- Stdout (no `-o`, or `-o -`) redirected to a regular file gets a complete file. To a pipe:
  WAV gets a header whose RIFF and data sizes are 0xFFFFFFFF ("unknown length", as ffmpeg
  writes on a non-seekable output; libsndfile cannot, it rewrites the header on close and
  appends it instead), then the samples as they come. FLAC, Ogg Vorbis and Opus are
  libsndfile's stream as it encodes it (FLAC's STREAMINFO keeps "total samples unknown",
  which the format allows). MP3 needs a seekable output (libsndfile writes its header
  last): an error on a pipe.
"""
from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

RAW_FORMATS = ("s16le", "f32le")
CONTAINERS = {  # name -> (libsndfile format, subtype, file suffixes)
    "wav": ("WAV", None, (".wav",)),  # subtype from the sample format
    "flac": ("FLAC", "PCM_16", (".flac",)),
    "ogg": ("OGG", "VORBIS", (".ogg", ".oga")),
    "opus": ("OGG", "OPUS", (".opus",)),
    "mp3": ("MP3", "MPEG_LAYER_III", (".mp3",)),
}
FORMATS = RAW_FORMATS + tuple(CONTAINERS)
SUFFIXES = {".raw": None, **{s: name for name, (_, _, sfx) in CONTAINERS.items() for s in sfx}}
PIPE_CONTAINERS = ("wav", "flac", "ogg", "opus")  # the containers that can stream to a pipe
INT16_SCALE = 32767  # float [-1, 1] -> int16 full scale
WAV_SUBTYPES = {"s16le": "PCM_16", "f32le": "FLOAT"}
UNKNOWN_SIZE = 0xFFFFFFFF  # RIFF/data size of a WAV of unknown length (ffmpeg's value on non-seekable output)


def to_bytes(pcm: np.ndarray, fmt: str) -> bytes:
    """float32 [-1, 1] samples -> little-endian raw bytes in `fmt`."""
    if fmt == "f32le":
        return np.asarray(pcm, dtype="<f4").tobytes()
    return to_int16(pcm).tobytes()


def to_int16(pcm: np.ndarray) -> np.ndarray:
    """Our rounding, so a 16-bit file holds exactly the s16le stream's samples."""
    return np.clip(np.rint(np.asarray(pcm, np.float32) * INT16_SCALE), -32768, 32767).astype("<i2")


def wav_stream_header(fmt: str, sample_rate: int, channels: int = 1) -> bytes:
    """A 44-byte canonical WAV header with unknown (0xFFFFFFFF) RIFF and data sizes."""
    tag, bits = (3, 32) if fmt == "f32le" else (1, 16)  # WAVE_FORMAT_IEEE_FLOAT / WAVE_FORMAT_PCM
    block = channels * bits // 8
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", UNKNOWN_SIZE, b"WAVE", b"fmt ", 16, tag, channels,
                       sample_rate, sample_rate * block, block, bits, b"data", UNKNOWN_SIZE)


@dataclass(frozen=True)
class OutputSpec:
    """What to write and where, validated."""

    container: str | None  # None = raw samples
    sample_format: str  # s16le | f32le (raw, WAV); s16le for the others (what soundfile is handed)
    path: str | None  # None = stdout
    stream_mode: bool = False  # stdout is a pipe (or not at its start): write as a stream

    def describe(self) -> str:
        what = self.container or self.sample_format
        if self.container == "wav":
            what = f"wav ({WAV_SUBTYPES[self.sample_format]})"
        return f"{what} to {self.path or 'stdout'}"


def _stream_mode(stream: BinaryIO) -> bool:
    """True when the output cannot be rewritten at its start (a pipe, a terminal, a file opened for appending)."""
    try:
        return not (stream.seekable() and stream.tell() == 0)
    except (OSError, ValueError, AttributeError):
        return True


def check_libsndfile(container: str) -> None:
    import soundfile

    major, subtype, _ = CONTAINERS[container]
    subtype = subtype or "PCM_16"
    if major not in soundfile.available_formats() or subtype not in soundfile.available_subtypes(major):
        raise ValueError(f"this libsndfile ({soundfile.__libsndfile_version__}) cannot write {container} "
                         f"({major}/{subtype}); use wav or flac, or install a libsndfile built with it")


def resolve_output(fmt: str | None, path: str | None, stream: BinaryIO | None = None) -> OutputSpec:
    """Validate --format and --output-file together; ValueError names the conflict."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if path == "-":
        path = None
    container = fmt if fmt in CONTAINERS else None
    if path is not None:
        suffix = Path(path).suffix.lower()
        if suffix not in SUFFIXES:
            raise ValueError(f"output file must end in {', '.join(SUFFIXES)}, got {path!r}")
        if container is not None and suffix != ".raw" and SUFFIXES[suffix] != container:
            raise ValueError(f"--format {fmt} does not match the output file {path!r}")
        container = container or SUFFIXES[suffix]
        parent = Path(path).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ValueError(f"cannot write {path!r}: {parent} is not a writable directory")
    sample = fmt if fmt in RAW_FORMATS else "s16le"
    if container is not None and fmt == "f32le" and container != "wav":
        why = "FLAC holds integer samples" if container == "flac" else f"{container} is a lossy codec with no sample format"
        raise ValueError(f"--format f32le cannot be written as {container}: {why}; "
                         "use a .wav file for 32-bit float, or drop --format")
    stream_mode = False
    if container is not None:
        check_libsndfile(container)
        if path is None:
            stream_mode = _stream_mode(stream or sys.stdout.buffer)
            if stream_mode and container not in PIPE_CONTAINERS:
                raise ValueError(f"{container} cannot be streamed to a pipe (its header is written last); "
                                 f"write a file with -o out.{container}, or stream {', '.join(PIPE_CONTAINERS)}")
    return OutputSpec(container, sample, path, stream_mode)


class _Forwarder:
    """A write-only file for libsndfile that passes bytes straight on and drops rewrites of bytes already sent.

    libsndfile seeks back only to finalise a header (FLAC's STREAMINFO); on a stream those
    fields keep their "unknown" values. Nothing is buffered here.
    """

    def __init__(self, out: BinaryIO):
        self.out, self.pos, self.size = out, 0, 0

    def write(self, data) -> int:
        data = bytes(data)
        end = self.pos + len(data)
        if end > self.size:
            self.out.write(data[max(0, self.size - self.pos):])
            self.size = end
        self.pos = end
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        return b""

    def flush(self) -> None:
        self.out.flush()


class AudioWriter:
    """Writes every chunk as it comes and flushes it, so a player or pipe hears it at once.

    The file is opened at the first write (or at `close`, for an empty but valid file), so a
    request that fails before any audio leaves no file behind (`abort`).
    """

    def __init__(self, fmt: "str | OutputSpec | None", sample_rate: int, path: str | None = None,
                 stream: BinaryIO | None = None):
        self.spec = fmt if isinstance(fmt, OutputSpec) else resolve_output(fmt, path, stream)
        self.sample_rate, self.samples = sample_rate, 0
        self._stream = stream
        self._raw: BinaryIO | None = None  # raw bytes go here
        self._sf = None  # soundfile.SoundFile
        self._fwd: _Forwarder | None = None
        self._owned = None  # a file we opened
        self._opened = False

    @property
    def fmt(self) -> str:
        return self.spec.container or self.spec.sample_format

    def _open(self) -> None:
        self._opened = True
        spec = self.spec
        out = None
        if spec.path is None:
            out = self._stream or sys.stdout.buffer
        elif spec.container is None:
            out = self._owned = open(spec.path, "wb")
        if spec.container is None:
            self._raw = out
            return
        if spec.container == "wav" and spec.stream_mode:
            self._raw = out
            out.write(wav_stream_header(spec.sample_format, self.sample_rate))
            return
        import soundfile

        major, subtype, _ = CONTAINERS[spec.container]
        subtype = subtype or WAV_SUBTYPES[spec.sample_format]
        target = spec.path
        if out is not None:
            target = self._fwd = _Forwarder(out) if spec.stream_mode else out
        self._sf = soundfile.SoundFile(target, "w", samplerate=self.sample_rate, channels=1, format=major, subtype=subtype)

    def write(self, pcm: np.ndarray) -> None:
        if not self._opened:
            self._open()
        if self._sf is not None:
            integer = self._sf.subtype == "PCM_16"
            self._sf.write(to_int16(pcm) if integer else np.asarray(pcm, np.float32))
            self._sf.flush()
            if self._fwd is not None:
                self._fwd.flush()
        else:
            self._raw.write(to_bytes(pcm, self.spec.sample_format))
            self._raw.flush()
        self.samples += len(pcm)

    def silence(self, n: int) -> None:
        """Exactly `n` samples of digital silence."""
        if n > 0:
            self.write(np.zeros(n, np.float32))

    def close(self) -> None:
        """Finish the output (an empty output still gets a valid header)."""
        if not self._opened:
            self._open()
        self._finish()

    def abort(self) -> None:
        """Stop after a failure: keep what was written; remove a file of ours that holds no audio."""
        if not self._opened:
            return
        self._finish()
        if self.samples == 0 and self.spec.path is not None:
            Path(self.spec.path).unlink(missing_ok=True)

    def _finish(self) -> None:
        if self._sf is not None:
            sf, self._sf = self._sf, None
            sf.close()
            if self._fwd is not None:
                self._fwd.flush()
        if self._owned is not None:
            self._owned.close()
            self._owned = None
        elif self._raw is not None:
            self._raw.flush()
