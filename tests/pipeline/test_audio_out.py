"""Output formats: every file format and every streamable stdout format round-trips with its sample rate and length."""
import io
import struct
import wave

import numpy as np
import pytest
import soundfile

from pipeline.audio_out import AudioWriter, resolve_output, to_int16

SR = 24_000
PCM = (0.3 * np.sin(np.arange(3 * 9600) * 0.05)).astype(np.float32)  # 1.2 s
CHUNKS = [PCM[i:i + 1920] for i in range(0, len(PCM), 1920)]


class Pipe(io.RawIOBase):
    """A non-seekable byte sink, like stdout on a pipe."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def seekable(self):
        return False

    def write(self, b):
        self.data += bytes(b)
        return len(b)


def write_all(writer, pause=0):
    for c in CHUNKS[:5]:
        writer.write(c)
    writer.silence(pause)
    for c in CHUNKS[5:]:
        writer.write(c)
    writer.close()


def read_flac_stream(data: bytes) -> np.ndarray:
    """Decode a FLAC stream of unknown length (soundfile's read() needs the total; libsndfile's own readf does not)."""
    from soundfile import _ffi, _snd

    f = soundfile.SoundFile(io.BytesIO(data))
    assert f.samplerate == SR and f.channels == 1
    out, buf = [], np.zeros(4096, np.float32)
    while (n := _snd.sf_readf_float(f._file, _ffi.cast("float *", buf.ctypes.data), len(buf))) > 0:
        out.append(buf[:n].copy())
    return np.concatenate(out)


@pytest.mark.parametrize("name,fmt,subtype", [("a.wav", None, "PCM_16"), ("a.wav", "f32le", "FLOAT"), ("a.flac", None, "PCM_16"),
                                              ("a.flac", "flac", "PCM_16"), ("a.ogg", None, "VORBIS"), ("a.opus", "opus", "OPUS"),
                                              ("a.mp3", None, "MPEG_LAYER_III")])
def test_files_round_trip(tmp_path, name, fmt, subtype):
    path = str(tmp_path / name)
    write_all(AudioWriter(fmt, SR, path), pause=4800)
    info = soundfile.info(path)
    assert info.samplerate == SR and info.channels == 1 and info.subtype == subtype
    data, sr = soundfile.read(path, dtype="float32")
    assert sr == SR and len(data) == len(PCM) + 4800
    if subtype == "PCM_16":
        assert np.array_equal(soundfile.read(path, dtype="int16")[0][:9600], to_int16(PCM[:9600]))  # exactly our rounding
    elif subtype == "FLOAT":
        assert np.array_equal(data[:9600], PCM[:9600]) and not data[9600:14400].any()


def test_raw_file_and_stdout_bytes(tmp_path):
    path = tmp_path / "a.raw"
    write_all(AudioWriter("f32le", SR, str(path)))
    assert path.read_bytes() == PCM.astype("<f4").tobytes()
    pipe = Pipe()
    write_all(AudioWriter(None, SR, stream=pipe))
    assert bytes(pipe.data) == to_int16(PCM).tobytes()


def test_wav_to_a_pipe_has_an_unknown_length_header_and_parses():
    pipe = Pipe()
    writer = AudioWriter(resolve_output("wav", "-", pipe), SR, stream=pipe)
    write_all(writer, pause=480)
    data = bytes(pipe.data)
    riff, size, wave_id = struct.unpack("<4sI4s", data[:12])
    assert (riff, size, wave_id) == (b"RIFF", 0xFFFFFFFF, b"WAVE") and data[36:44] == b"data\xff\xff\xff\xff"
    got, sr = soundfile.read(io.BytesIO(data), dtype="int16")
    assert sr == SR and len(got) == len(PCM) + 480 and np.array_equal(got[:9600], to_int16(PCM[:9600]))
    w = wave.open(io.BytesIO(data))
    assert w.getframerate() == SR and w.getsampwidth() == 2 and len(w.readframes(10 ** 9)) == 2 * (len(PCM) + 480)


def test_flac_and_ogg_stream_to_a_pipe():
    pipe = Pipe()
    write_all(AudioWriter(resolve_output("flac", None, pipe), SR, stream=pipe), pause=960)
    got = read_flac_stream(bytes(pipe.data))
    assert len(got) == len(PCM) + 960
    assert np.array_equal(np.rint(got[:9600] * 32768).astype(np.int16), to_int16(PCM[:9600]))
    for fmt in ("ogg", "opus"):
        pipe = Pipe()
        write_all(AudioWriter(resolve_output(fmt, None, pipe), SR, stream=pipe))
        got, sr = soundfile.read(io.BytesIO(bytes(pipe.data)))
        assert sr == SR and len(got) == len(PCM)


def test_stdout_redirected_to_a_file_gets_a_complete_file():
    out = io.BytesIO()
    spec = resolve_output("flac", None, out)
    assert not spec.stream_mode
    write_all(AudioWriter(spec, SR, stream=out))
    data, sr = soundfile.read(io.BytesIO(out.getvalue()), dtype="int16")
    assert sr == SR and np.array_equal(data, to_int16(PCM))


@pytest.mark.parametrize("fmt,path,message", [
    ("f32le", "x.flac", "FLAC holds integer samples"),
    ("f32le", "x.mp3", "lossy codec"),
    ("mp3", "x.wav", "does not match"),
    (None, "x.aiff", "must end in"),
    (None, "/nonexistent/dir/x.wav", "not a writable directory"),
    ("mp3", None, "cannot be streamed to a pipe"),
    ("aac", None, "format must be one of"),
])
def test_bad_combinations_are_errors(fmt, path, message):
    with pytest.raises(ValueError, match=message):
        resolve_output(fmt, path, Pipe())


def test_a_codec_libsndfile_lacks_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(soundfile, "available_subtypes", lambda fmt=None: {"PCM_16": "16 bit"})
    with pytest.raises(ValueError, match=r"cannot write mp3 \(MP3/MPEG_LAYER_III\)"):
        resolve_output(None, "x.mp3")


def test_nothing_is_created_before_the_first_sample_and_abort_removes_an_empty_file(tmp_path):
    path = tmp_path / "a.wav"
    w = AudioWriter(None, SR, str(path))
    assert not path.exists()
    w.abort()
    assert not path.exists()
    w = AudioWriter(None, SR, str(path))
    w.close()  # success with no audio: a valid empty file
    assert soundfile.info(str(path)).frames == 0
