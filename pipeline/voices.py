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
    """Which model made a voice (a pipeline.models.ModelSpec), for the manifest."""
    return {"checkpoint": str(Path(spec.checkpoint).resolve()) if spec.checkpoint else None,
            "preset": None if spec.checkpoint else spec.preset, "description": spec.describe()}


class VoiceLibrary:
    """The store under `root` (default_voices_dir() when None), with the write operations."""

    def __init__(self, root: str | Path | None = None):
        from stages.voice.store import VoiceStore

        self.root = Path(root) if root is not None else default_voices_dir()
        self.store = VoiceStore(self.root)

    def check_new(self, name: str, force: bool = False) -> str:
        """Fail before any work if `name` cannot be added (invalid, reserved, taken without force)."""
        from stages.voice.store import VoiceStoreError, check_name

        check_name(name)
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


def add_voice_from_file(library: VoiceLibrary, name: str, recording: str | Path, spec, exaggeration: float = 0.5,
                        force: bool = False) -> tuple[Any, Any, float]:
    """Check everything, compute the voice of `recording` with the model of `spec`, store it.

    -> (VoiceInfo, the stages.voice.audio.ReferenceAudio (its .notices are for the user), seconds spent computing).
    Raises VoiceStoreError / VoiceInputError / CheckpointError, all before any model runs
    for problems with the name, the exaggeration, the recording or the checkpoint files.
    """
    from stages.voice.audio import read_reference
    from stages.voice.checkpoint import S3GEN_FILE, VE_FILE, load_voice_models
    from stages.voice.conditioning import check_exaggeration, compute_conditionals

    library.check_new(name, force)
    check_exaggeration(exaggeration)
    cfg, prompt_len = voice_config_of(spec)
    if spec.checkpoint is not None:
        from stages.common.weights import CheckpointError

        d = Path(spec.checkpoint)
        missing = [f for f in (VE_FILE, S3GEN_FILE) if not (d / f).is_file()]
        if not d.is_dir() or missing:
            raise CheckpointError(f"{d}: voice cloning needs {', '.join(missing) or 'a checkpoint directory'} "
                                  "(the model itself runs from conds.pt without ve.safetensors)")
    audio = read_reference(recording, cfg)
    t0 = time.perf_counter()
    models = load_voice_models(spec.checkpoint, spec.preset, spec.device)
    t1 = time.perf_counter()
    conds = compute_conditionals(models, audio, exaggeration, prompt_len)
    took = time.perf_counter() - t1
    meta = {"source": {"file": Path(recording).name, "sha256": file_sha256(recording), "sample_rate": audio.sample_rate,
                       "channels": audio.channels, "seconds": round(audio.seconds, 3),
                       "used_seconds": round(audio.used_seconds, 3)},
            "model": model_record(spec), "compute_seconds": round(took, 3), "load_seconds": round(t1 - t0, 3)}
    return library.add(name, conds, meta, force), audio, took


def voice_config_of(spec) -> tuple[Any, int]:
    """(VoiceConfig, T3 prompt length) of a ModelSpec, from config files only (no weights read)."""
    from stages.t3.config import T3Config
    from stages.voice.config import VoiceConfig

    if spec.checkpoint is None:
        return VoiceConfig.from_name(spec.preset), T3Config.from_name(spec.preset).prompt_len
    d = Path(spec.checkpoint)
    return VoiceConfig.from_checkpoint_dir(d), T3Config.from_checkpoint_dir(d).prompt_len
