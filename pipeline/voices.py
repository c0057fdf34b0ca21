"""Managing the voice store: where it lives, adding a voice made from a recording, listing, removing.

The file format and the read side (what stage processes load) are stages/voice/store.py;
this module changes the store. Writes are atomic: a voice is written into a hidden
temporary folder and renamed into place, so readers never see half a voice and two
concurrent adds of one name cannot both win.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

# stages.voice.store (and with it torch) is imported on first use, so `tts-pipeline --help` stays fast.

APP_NAME = "chatterbox-streaming-engine"  # folder name under the user's data dir
HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a recording
FOLDER_MODE, FILE_MODE = 0o755, 0o644  # a voice is readable by anyone who can read the voices folder


def default_voices_dir() -> Path:
    """$XDG_DATA_HOME/chatterbox-streaming-engine/voices (~/.local/share/... when unset; the OS's data dir elsewhere)."""
    import platformdirs

    return platformdirs.user_data_path(APP_NAME) / "voices"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def model_record(spec) -> dict[str, Any]:
    """Which model made a voice (a pipeline.models.ModelSpec), for the manifest; `family` is what stages check."""
    return {"checkpoint": str(Path(spec.checkpoint).resolve()) if spec.checkpoint else None,
            "preset": None if spec.checkpoint else spec.preset, "family": spec.kind, "description": spec.describe()}


class VoiceLibrary:
    """The store under `root` (default_voices_dir() when None), with the write operations."""

    def __init__(self, root: str | Path | None = None):
        from stages.voice.store import FILE_CACHE_DIR, VoiceStore

        self.root = Path(root) if root is not None else default_voices_dir()
        self.store = VoiceStore(self.root)
        self.is_file_cache = self.root.name == FILE_CACHE_DIR  # the on-the-fly voices' folder (VoiceFiles)

    def check_new(self, name: str, force: bool = False) -> str:
        """Fail before any work if `name` cannot be added (invalid, reserved, taken without force)."""
        from stages.voice.store import FILE_PREFIX, VoiceStoreError, check_name

        check_name(name)
        if name.startswith(FILE_PREFIX) != self.is_file_cache:
            raise VoiceStoreError(f"invalid voice name {name!r}: names starting with {FILE_PREFIX!r} are reserved for "
                                  "voices made from a request's recording (--voice-file)")
        if self.store.exists(name) and not force:
            raise VoiceStoreError(f"voice {name!r} already exists in {self.root} (use --force to replace it)")
        if self.root.exists() and not self.root.is_dir():
            raise VoiceStoreError(f"{self.root}: the voices folder is a file")
        return name

    def add(self, name: str, conds, meta: dict[str, Any], force: bool = False):
        """Store a stages.voice.conds.VoiceConditionals under `name` (replacing one only with force) -> VoiceInfo."""
        from stages.voice.store import VoiceStoreError, write_voice_files

        self.check_new(name, force)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        old = None
        try:
            write_voice_files(tmp, conds, {"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           **meta})
            for path, mode in ((tmp, FOLDER_MODE), *((f, FILE_MODE) for f in tmp.iterdir())):
                os.chmod(path, mode)  # mkdtemp makes 0700: a served voices folder is read by the server's user
            target = self.root / name
            if force and target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=self.root))
                os.replace(target, old / name)  # move the old voice aside, then put the new one in its place
            try:
                os.rename(tmp, target)  # atomic; fails if another add created a non-empty `name` meanwhile
            except OSError as e:
                raise VoiceStoreError(f"voice {name!r} already exists in {self.root} (use --force to replace it)") from e
        finally:
            for leftover in (tmp, old):
                if leftover is not None and leftover.exists():
                    shutil.rmtree(leftover, ignore_errors=True)
        return self.store.info(name)

    def remove(self, name: str) -> None:
        from stages.voice.store import DEFAULT_VOICE, VoiceStoreError

        if name == DEFAULT_VOICE:
            raise VoiceStoreError(f"{DEFAULT_VOICE!r} is the model's own voice (its conds.pt) and cannot be removed")
        info = self.store.info(name)  # unknown / invalid names fail here, naming the voice
        trash = Path(tempfile.mkdtemp(prefix=f".rm-{name}-", dir=self.root))
        try:
            os.replace(info.folder, trash / name)  # readers stop seeing it at once
        finally:
            shutil.rmtree(trash, ignore_errors=True)

    def voices(self) -> list:
        """Every stored voice's VoiceInfo, or the VoiceStoreError that makes it unreadable (listing shows both)."""
        from stages.voice.store import VoiceStoreError

        out: list = []
        for name in self.store.names():
            try:
                out.append(self.store.info(name))
            except VoiceStoreError as e:
                out.append(e)
        return out


def voice_model_spec(spec):
    """`spec` with its model family fixed, for making voices: a checkpoint folder needs only the
    conditioning files (ve.safetensors and the S3Gen file), not the whole layout, so the family comes
    from --model, else the T3 file, else which S3Gen file is there. Both T3 files and no --model:
    AmbiguousCheckpointError (a CheckpointError) asking for --model."""
    from dataclasses import replace

    from stages.common.layout import CHATTERBOX, MARKER_FILES, TURBO, AmbiguousCheckpointError
    from stages.voice.checkpoint import S3GEN_FILE, TURBO_S3GEN_FILE

    if spec.builtin or spec.model is not None:
        return replace(spec, model=spec.kind)  # an unknown preset, or --model against the preset: ValueError
    d = Path(spec.checkpoint)
    markers = [k for k in (CHATTERBOX, TURBO) if (d / MARKER_FILES[k]).is_file()]
    if len(markers) > 1:
        raise AmbiguousCheckpointError(f"{d}: holds both the Chatterbox and the Chatterbox Turbo layout; "
                                       "choose the voice's model with --model chatterbox|turbo")
    turbo = markers == [TURBO] or (not markers and (d / TURBO_S3GEN_FILE).is_file() and not (d / S3GEN_FILE).is_file())
    return replace(spec, model=TURBO if turbo else CHATTERBOX)


def check_voice_checkpoint(spec) -> None:
    """Fail before reading any recording if the checkpoint cannot make voices (CheckpointError naming the files)."""
    from stages.voice.checkpoint import S3GEN_FILE, TURBO_S3GEN_FILE, VE_FILE

    if spec.checkpoint is None:
        return
    from stages.common.weights import CheckpointError

    d = Path(spec.checkpoint)
    missing = [f for f in (VE_FILE, TURBO_S3GEN_FILE if spec.turbo else S3GEN_FILE) if not (d / f).is_file()]
    if not d.is_dir() or missing:
        raise CheckpointError(f"{d}: voice cloning needs {', '.join(missing) or 'a checkpoint directory'} "
                              "(the model itself runs from conds.pt without ve.safetensors)")


def source_record(recording: str | Path, audio, sha256: str | None = None) -> dict[str, Any]:
    return {"file": Path(recording).name, "sha256": sha256 or file_sha256(recording), "sample_rate": audio.sample_rate,
            "channels": audio.channels, "seconds": round(audio.seconds, 3), "used_seconds": round(audio.used_seconds, 3)}


def add_voice_from_file(library: VoiceLibrary, name: str, recording: str | Path, spec, exaggeration: float = 0.5,
                        force: bool = False) -> tuple[Any, Any, float]:
    """Check everything, compute the voice of `recording` with the model of `spec`, store it.

    -> (VoiceInfo, the stages.voice.audio.ReferenceAudio (its .notices are for the user), seconds spent computing).
    Raises VoiceStoreError / VoiceInputError / CheckpointError, all before any model runs
    for problems with the name, the exaggeration, the recording or the checkpoint files.
    """
    from stages.voice.audio import read_reference
    from stages.voice.checkpoint import load_voice_models
    from stages.voice.conditioning import check_exaggeration, compute_conditionals

    library.check_new(name, force)
    check_exaggeration(exaggeration)
    cfg, prompt_len = voice_config_of(spec)
    check_voice_checkpoint(spec)
    audio = read_reference(recording, cfg)
    t0 = time.perf_counter()
    models = load_voice_models(spec.checkpoint, spec.preset, spec.device, spec.kind)
    t1 = time.perf_counter()
    conds = compute_conditionals(models, audio, exaggeration, prompt_len)
    took = time.perf_counter() - t1
    meta = {"source": source_record(recording, audio), "model": model_record(spec), "compute_seconds": round(took, 3),
            "load_seconds": round(t1 - t0, 3)}
    return library.add(name, conds, meta, force), audio, took


# --- voices made on the fly from a request's recording ----------------------------------------
FILE_CACHE_MAX = 64  # on-the-fly voices kept (~0.2 MB each with a 10 s prompt); the least recently used go first
FILE_EXAGGERATION = 0.5  # stored with an on-the-fly voice: the same as `voice add`'s default, so the two are equal


class VoiceFiles:
    """`say --voice-file` / `stream(voice_file=...)`: a recording -> the name of its voice in the store's file cache.

    Runs in the front-end process (the caller's thread), never in a stage loop. The voice is
    computed once per (file content, model) and stored under `<voices dir>/.cache/file-<hash>`,
    where the stages load it by that name like any stored voice; a later request with the same
    file (any path) finds it there and computes nothing. The conditioning models are loaded on
    the first miss and kept. Thread-safe (one computation at a time).
    """

    def __init__(self, spec, root: str | Path | None = None, max_entries: int = FILE_CACHE_MAX):
        import threading

        from stages.voice.store import FILE_CACHE_DIR

        self.spec = spec
        self.root = Path(root) if root is not None else default_voices_dir()
        self.library = VoiceLibrary(self.root / FILE_CACHE_DIR)
        self.max_entries = max_entries
        self.models = None
        self.computed = 0  # voices computed by this object (the rest were found in the cache)
        self._lock = threading.Lock()

    def cache_name(self, recording: str | Path) -> tuple[str, str]:
        """(voice name, the file's sha256); the name depends on the bytes and the model, not on the path."""
        from stages.voice.store import FILE_PREFIX, VERSION

        sha = file_sha256(recording)
        key = hashlib.sha256(f"{sha}|{model_record(self.spec)}|{FILE_EXAGGERATION}|v{VERSION}".encode()).hexdigest()
        return FILE_PREFIX + key[:40], sha

    def voice_for(self, recording: str | Path) -> tuple[str, list[str]]:
        """(the voice name a request carries, notices for the user). VoiceInputError / CheckpointError name the file."""
        from stages.voice.audio import VoiceInputError, read_reference
        from stages.voice.conditioning import compute_conditionals

        cfg, prompt_len = voice_config_of(self.spec)
        p = Path(recording)
        if p.is_dir():
            raise VoiceInputError(f"{recording}: is a directory, not an audio file")
        if not p.is_file():
            raise VoiceInputError(f"{recording}: no such file")
        name, sha = self.cache_name(recording)
        with self._lock:
            if self.library.store.exists(name):
                info = self.library.store.info(name)
                os.utime(info.folder)  # most recently used: the last to be pruned
                src = info.manifest.get("source", {})
                return name, self._notices(recording, src, cfg)
            check_voice_checkpoint(self.spec)
            audio = read_reference(recording, cfg)  # every bad recording fails here, before any model runs
            if self.models is None:
                from stages.voice.checkpoint import load_voice_models

                self.models = load_voice_models(self.spec.checkpoint, self.spec.preset, self.spec.device,
                                                self.spec.kind)
            t0 = time.perf_counter()
            conds = compute_conditionals(self.models, audio, FILE_EXAGGERATION, prompt_len)
            meta = {"source": source_record(recording, audio, sha), "model": model_record(self.spec),
                    "compute_seconds": round(time.perf_counter() - t0, 3)}
            try:
                self.library.add(name, conds, meta)
            except Exception:
                if not self.library.store.exists(name):  # another process stored the same voice meanwhile: fine
                    raise
            self.computed += 1
            self._prune(keep=name)
            return name, list(audio.notices)

    @staticmethod
    def _notices(recording, src: dict, cfg) -> list[str]:
        """The cut notice of a cached voice's recording (the cache hit reads no audio)."""
        seconds = src.get("seconds")
        if isinstance(seconds, (int, float)) and seconds > cfg.max_seconds:
            return [f"{recording}: is {seconds:.1f} s long; using its first {cfg.max_seconds:g} s"]
        return []

    def _prune(self, keep: str) -> None:
        """Keep the max_entries most recently used cached voices (a stage that loses one mid-request fails that request)."""
        folders = [self.library.root / n for n in self.library.store.names()]
        if len(folders) <= self.max_entries:
            return
        folders.sort(key=lambda f: f.stat().st_mtime)
        for f in folders[: len(folders) - self.max_entries]:
            if f.name != keep:
                try:
                    self.library.remove(f.name)
                except Exception:  # another process pruned it first
                    pass


def check_voice_name(root: str | Path | None, name: str | None, family: str | None = None) -> None:
    """A request's `voice` before it is submitted: `default`, or a voice the store holds, made for `family`
    (the served model's; None: any). VoiceStoreError names the voice."""
    from stages.common.params import check_voice
    from stages.voice.store import DEFAULT_VOICE, store_for

    check_voice(name)
    if name is None or name == DEFAULT_VOICE:
        return
    store_for(root if root is not None else default_voices_dir(), name).info(name).check_family(family)


def voice_config_of(spec) -> tuple[Any, int]:
    """(VoiceConfig, T3 prompt length) of a ModelSpec, from config files only (no weights read).

    Turbo: its 15 s / 375-token T3 prompt, the > 5 s minimum and the -27 LUFS gain (VoiceConfig TURBO)."""
    from dataclasses import replace

    from stages.voice.config import TURBO_OVERRIDES, VoiceConfig

    if spec.turbo:
        from stages.t3.turbo_config import TurboT3Config as T3Config
    else:
        from stages.t3.config import T3Config
    if spec.checkpoint is None:
        return VoiceConfig.from_name(spec.preset), T3Config.from_name(spec.preset).prompt_len
    d = Path(spec.checkpoint)
    cfg = VoiceConfig.from_checkpoint_dir(d)
    return (replace(cfg, **TURBO_OVERRIDES) if spec.turbo else cfg), T3Config.from_checkpoint_dir(d).prompt_len
