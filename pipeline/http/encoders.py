"""Response formats: float32 chunks in, the bytes of one response format out, chunk by chunk.

`pcm` (s16le) and `wav` stream: their bytes for a chunk are final the moment the chunk
arrives. `flac`, `mp3` and `opus` are encoded by libsndfile (soundfile) as the chunks
arrive, but the file is only complete at the end: libsndfile writes the total length into
their headers when it closes them (FLAC STREAMINFO, the MP3 info frame), and a FLAC stream
without it is one libsndfile itself cannot read back; its Ogg/Opus writer emits pages only
at the end anyway. So those three are sent whole, with a Content-Length.
"""
from __future__ import annotations

import io
import struct

import numpy as np

from pipeline.audio_out import to_bytes

SAMPLE_RATE = 24_000  # Hz, every Chatterbox model's output rate
CHANNELS = 1
BYTES_PER_SAMPLE = 2  # s16le
# A streamed WAV's RIFF and data sizes are unknown when its header goes out: 0xFFFFFFFF, as
# OpenAI's streamed WAV does; readers (libsndfile, ffmpeg, browsers) read the data to the end.
UNKNOWN_SIZE = 0xFFFFFFFF

MEDIA_TYPES = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
}
STREAMABLE = ("pcm", "wav")
# libsndfile (format, subtype) per compressed format; the lossless ones get exactly the s16le samples.
SOUNDFILE_TYPES = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS"),
                   "wav": ("WAV", "PCM_16")}
# OpenAI formats we do not offer, and why (the message a request for one gets).
UNAVAILABLE = {"aac": "no AAC encoder is available here (libsndfile has none)"}


def available_formats() -> tuple[str, ...]:
    """The response formats this machine's libsndfile can encode (pcm and wav need nothing)."""
    import soundfile

    have = soundfile.available_formats()
    out = ["pcm", "wav"]
    for name in ("flac", "mp3", "opus"):
        fmt, subtype = SOUNDFILE_TYPES[name]
        if fmt in have and subtype in soundfile.available_subtypes(fmt):
            out.append(name)
    return tuple(out)


def wav_stream_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV whose length is not known yet."""
    block_align = CHANNELS * BYTES_PER_SAMPLE
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, CHANNELS, sample_rate, sample_rate * block_align,
                            block_align, 8 * BYTES_PER_SAMPLE)  # 16 = PCM fmt chunk size, 1 = WAVE_FORMAT_PCM
    return struct.pack("<4sI4s", b"RIFF", UNKNOWN_SIZE, b"WAVE") + fmt_chunk + struct.pack("<4sI", b"data", UNKNOWN_SIZE)


class Encoder:
    """encode(pcm) per chunk, then finish(); the concatenation is the response body."""

    def __init__(self, fmt: str, streaming: bool, sample_rate: int = SAMPLE_RATE):
        self.fmt, self.streaming, self.sample_rate = fmt, streaming, sample_rate
        self.media_type = MEDIA_TYPES[fmt]
        self._header = wav_stream_header(sample_rate) if fmt == "wav" and streaming else b""
        self._file = None
        if fmt not in ("pcm",) and not (fmt == "wav" and streaming):
            import soundfile

            container, subtype = SOUNDFILE_TYPES[fmt]
            self._buf = io.BytesIO()
            self._file = soundfile.SoundFile(self._buf, "w", samplerate=sample_rate, channels=CHANNELS,
                                             format=container, subtype=subtype)

    def encode(self, pcm: np.ndarray) -> bytes:
        if self._file is None:
            out, self._header = self._header + to_bytes(pcm, "s16le"), b""
            return out
        if self._file.subtype == "PCM_16":  # the same rounding as the pcm stream, so the samples are equal
            self._file.write(np.frombuffer(to_bytes(pcm, "s16le"), dtype="<i2"))
        else:
            self._file.write(np.asarray(pcm, dtype=np.float32))
        return b""

    def finish(self) -> bytes:
        """The rest of the body: the whole file for the formats sent whole (an empty utterance included)."""
        if self._file is None:
            out, self._header = self._header, b""
            return out
        self._file.close()
        self._file = None
        return self._buf.getvalue()

    def close(self) -> None:
        """Release the encoder after a failed or cancelled request."""
        if self._file is not None:
            self._file.close()
            self._file = None
