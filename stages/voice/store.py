"""The voice store, read side and file format: one folder per voice, tensors in safetensors, a small JSON.

    <voices dir>/<name>/voice.json          manifest: format, exaggeration, content hashes, source, model (and its family)
    <voices dir>/<name>/voice.safetensors   t3.speaker_emb, t3.cond_prompt_speech_tokens, t3.emotion_adv,
                                            gen.prompt_token, gen.prompt_token_len, gen.prompt_feat, gen.embedding

The tensors are exactly what the reference's conds.pt would hold (names included), stored
as raw little-endian bytes, so a voice read back in any process is bit-identical to the one
written. A stage reads only its part (safetensors opens lazily, per key): T3 the `t3.*`
tensors, CFM the `gen.*` ones, and checks them against the part's content hash in the
manifest. The hashes (sha256 over names, dtypes, shapes and bytes) are the cache keys: the
same recording made into the same voice gives the same keys under any name.

A voice belongs to the model family it was made with (manifest `model.family`, "chatterbox"
when absent, as in voices written before Turbo): Turbo's voices have a 15 s / 375-token T3
prompt and a -27 LUFS gain, the base model's 6 s / 150 tokens and none, so a stage of one
family refuses the other's voices with an error saying how to make one for it.

Writing (add / remove, the default folder) is the system's job: pipeline/voices.py, which
uses `write_voice_files` here so the format is defined in one place. Never pickle.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stages.cfm.conds import FlowConditionals
from stages.common.layout import CHATTERBOX, MODEL_KINDS, TURBO
from stages.t3.conds import T3Conditionals
from stages.voice.conds import GEN_FIELDS, T3_FIELDS, VoiceConditionals

FORMAT = "chatterbox-voice"  # manifest "format"
VERSION = 1  # manifest "version"; readers refuse a newer one
MANIFEST_FILE = "voice.json"
TENSORS_FILE = "voice.safetensors"
DEFAULT_VOICE = "default"  # the checkpoint's conds.pt (or the built-in voice); never a folder in the store
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # also a safe folder name on every OS
T3_KEYS = tuple(f"t3.{f}" for f in T3_FIELDS)
CFM_KEYS = ("gen.prompt_token", "gen.prompt_feat", "gen.embedding")  # what the flow reads (prompt_token_len is redundant)
ALL_KEYS = T3_KEYS + tuple(f"gen.{f}" for f in GEN_FIELDS)
# Voices made on the fly from a request's recording (`say --voice-file`, `stream(voice_file=...)`) live in a
# hidden folder of the voices dir (so `voice list` does not show them), named FILE_PREFIX + a content hash.
FILE_PREFIX = "file-"
FILE_CACHE_DIR = ".cache"


def store_for(root: str | Path, name: str) -> "VoiceStore":
    """The store that holds voice `name`: the file cache for `file-` names, else the voices dir itself."""
    root = Path(root)
    return VoiceStore(root / FILE_CACHE_DIR if isinstance(name, str) and name.startswith(FILE_PREFIX) else root)


class VoiceStoreError(ValueError):
    """A voice name that is invalid or unknown, or a stored voice that cannot be read; names the voice."""


def check_name(name: str) -> str:
    """A valid name for a stored voice (not `default`), or VoiceStoreError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise VoiceStoreError(f"invalid voice name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit")
    if name == DEFAULT_VOICE:
        raise VoiceStoreError(f"{DEFAULT_VOICE!r} is the model's own voice (its conds.pt); choose another name")
    return name


def content_hash(tensors: dict[str, torch.Tensor], keys: tuple[str, ...]) -> str:
    """sha256 over (name, dtype, shape, bytes) of `keys` in sorted order: a cache key that ignores the voice's name."""
    h = hashlib.sha256()
    for k in sorted(keys):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def voice_hashes(conds: VoiceConditionals) -> dict[str, str]:
    """{"voice": all tensors, "t3": T3's part, "cfm": the flow's part}."""
    t = conds.tensors()
    return {"voice": content_hash(t, ALL_KEYS), "t3": content_hash(t, T3_KEYS), "cfm": content_hash(t, CFM_KEYS)}


def write_voice_files(folder: Path, conds: VoiceConditionals, meta: dict[str, Any]) -> dict[str, Any]:
    """Write voice.safetensors and voice.json into `folder` (which must exist); returns the manifest."""
    from safetensors.torch import save_file

    tensors = conds.tensors()
    hashes = voice_hashes(conds)
    save_file(tensors, str(folder / TENSORS_FILE), metadata={"format": FORMAT, "voice_hash": hashes["voice"]})
    exaggeration = round(conds.exaggeration, 6)  # the float32 tensor's value, printed as the user typed it (0.7)
    manifest = {"format": FORMAT, "version": VERSION, **meta, "exaggeration": exaggeration, "hash": hashes,
                "tensors": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
                            for k, v in tensors.items()}}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    folder: Path
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        """Content hash of the whole voice."""
        return self.manifest["hash"]["voice"]

    @property
    def t3_key(self) -> str:
        return self.manifest["hash"]["t3"]

    @property
    def cfm_key(self) -> str:
        return self.manifest["hash"]["cfm"]

    @property
    def exaggeration(self) -> float:
        return float(self.manifest["exaggeration"])

    @property
    def family(self) -> str:
        """The model family the voice was made for ("chatterbox" for voices that predate the field)."""
        return voice_family(self.manifest)

    def check_family(self, family: str | None) -> "VoiceInfo":
        """VoiceStoreError unless the voice was made for `family` (None: any)."""
        if family is not None and self.family != family:
            raise VoiceStoreError(
                f"voice {self.name!r} was made for the {FAMILY_NAMES[self.family]} model and this one runs "
                f"{FAMILY_NAMES[family]}: make a voice for it from the same recording (tts-pipeline voice add "
                f"NEW_NAME RECORDING with the --checkpoint or --preset this model runs)")
        return self


FAMILY_NAMES = {CHATTERBOX: "Chatterbox", TURBO: "Chatterbox Turbo"}  # as messages name the families


def voice_family(manifest: dict[str, Any]) -> str:
    """A manifest's model family; a voice written before the field existed was made for the base model."""
    model = manifest.get("model")
    family = model.get("family") if isinstance(model, dict) else None
    return family if family in MODEL_KINDS else CHATTERBOX


class VoiceStore:
    """Read access to the voices under `root` (cheap: a lookup reads one small JSON)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def names(self) -> list[str]:
        """Stored voices, sorted (folders with a manifest; half-written `.`-folders are skipped)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if NAME_RE.fullmatch(p.name) and p.name != DEFAULT_VOICE and (p / MANIFEST_FILE).is_file())

    def exists(self, name: str) -> bool:
        return bool(isinstance(name, str) and NAME_RE.fullmatch(name)) and (self.root / name / MANIFEST_FILE).is_file()

    def info(self, name: str) -> VoiceInfo:
        if name == DEFAULT_VOICE:
            raise VoiceStoreError(f"{DEFAULT_VOICE!r} is the model's own voice (its conds.pt), not a stored one")
        check_name(name)
        folder = self.root / name
        if not (folder / MANIFEST_FILE).is_file():
            known = ", ".join([DEFAULT_VOICE, *self.names()])
            raise VoiceStoreError(f"unknown voice {name!r} in {self.root} (known: {known})")
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text())
        except (OSError, ValueError) as e:
            raise VoiceStoreError(f"voice {name!r}: unreadable {folder / MANIFEST_FILE} ({e})") from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("hash"), dict):
            raise VoiceStoreError(f"voice {name!r}: {folder / MANIFEST_FILE} is not a {FORMAT} manifest")
        if not isinstance(manifest.get("version"), int) or manifest["version"] > VERSION:
            raise VoiceStoreError(f"voice {name!r}: format version {manifest.get('version')!r} is newer than this "
                                  f"engine reads ({VERSION})")
        return VoiceInfo(name, folder, manifest)

    def _read(self, info: VoiceInfo, keys: tuple[str, ...], part: str) -> dict[str, torch.Tensor]:
        """The tensors `keys` of a voice, checked against the manifest's `part` hash."""
        from safetensors import SafetensorError, safe_open

        path = info.folder / TENSORS_FILE
        try:
            with safe_open(str(path), framework="pt") as f:
                missing = [k for k in keys if k not in f.keys()]
                if missing:
                    raise VoiceStoreError(f"voice {info.name!r}: {path} lacks {', '.join(missing)}")
                tensors = {k: f.get_tensor(k) for k in keys}
        except (SafetensorError, OSError) as e:
            raise VoiceStoreError(f"voice {info.name!r}: unreadable {path} ({e})") from e
        if content_hash(tensors, keys) != info.manifest["hash"].get(part):
            raise VoiceStoreError(f"voice {info.name!r}: {path} does not match its manifest's {part} hash "
                                  "(the files are damaged or were changed; add the voice again)")
        return tensors

    def load(self, name: str) -> VoiceConditionals:
        """The whole voice (every tensor), checked against its content hash."""
        info = self.info(name)
        return VoiceConditionals.from_tensors(self._read(info, ALL_KEYS, "voice"))

    def load_t3(self, name: str, cfg=None, family: str | None = None):
        """(T3's part, its cache key): speaker embedding, prompt tokens, stored exaggeration; checked against `cfg`.

        family "turbo" -> a TurboT3Conditionals (no emotion input), else a T3Conditionals; a voice
        made for the other family is refused (VoiceStoreError)."""
        from stages.common.weights import CheckpointError

        info = self.info(name).check_family(family)
        t = self._read(info, T3_KEYS, "t3")
        if family == TURBO:
            from stages.t3.turbo_conds import TurboT3Conditionals

            conds = TurboT3Conditionals(t["t3.speaker_emb"], t["t3.cond_prompt_speech_tokens"])
        else:
            conds = T3Conditionals(t["t3.speaker_emb"], t["t3.cond_prompt_speech_tokens"], t["t3.emotion_adv"])
        if cfg is not None:
            try:
                conds.check(cfg, f"voice {name!r}")
            except CheckpointError as e:
                raise VoiceStoreError(str(e)) from e
        return conds, info.t3_key

    def load_cfm(self, name: str, cfg=None, family: str | None = None) -> tuple[FlowConditionals, str]:
        """(The flow's part, its cache key): prompt tokens, prompt mel (aligned to 2 frames per token), x-vector.
        A voice made for another `family` than the stage's is refused (VoiceStoreError)."""
        info = self.info(name).check_family(family)
        t = self._read(info, CFM_KEYS, "cfm")
        tokens, feat, emb = t["gen.prompt_token"], t["gen.prompt_feat"], t["gen.embedding"]
        n = min(tokens.size(1), feat.size(1) // 2)
        conds = FlowConditionals(tokens[:, :n].contiguous(), feat[:, : 2 * n].contiguous(), emb)
        if cfg is not None:
            problems = []
            if tuple(emb.shape) != (1, cfg.spk_embed_dim) or feat.size(-1) != cfg.n_mels:
                problems.append(f"embedding {list(emb.shape)} / prompt_feat {list(feat.shape)} do not fit the flow")
            if n == 0 or int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size:
                problems.append(f"prompt tokens are empty or outside [0, {cfg.vocab_size})")
            if problems:
                raise VoiceStoreError(f"voice {name!r}: " + "; ".join(problems))
        return conds, info.cfm_key
