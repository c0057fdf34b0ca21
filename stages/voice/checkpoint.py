"""Voice-model weights: schemas, strict loading, and the built-in random weights.

* VoiceEncoder: `ve.safetensors` (keys as written: lstm.*, proj.*, similarity_*).
* S3Tokenizer: `tokenizer.*` of `s3gen.safetensors`. `tokenizer._mel_filters` (a constant
  librosa filterbank the real file carries) is read when present and computed otherwise;
  `tokenizer.window` (absent from the base model's file, present in Turbo's) is ignored:
  both are fixed functions of the sizes, so neither is a learned weight.
* CAMPPlus: `speaker_encoder.*` of `s3gen.safetensors`, BatchNorm running statistics and
  the int64 `num_batches_tracked` counters included.

Each loader reads only its prefix and is strict inside it (stages/common/weights.py): a
missing, unexpected or misshaped key fails with the file and key named. The built-in
weights follow the golden recipe, so the built-in `tiny` models are bit-identical to the
golden tiny checkpoint (tests check every tensor).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stages.common.weights import CheckpointError, Schema, random_checkpoint, read_checkpoint, schema_from_module, strip_prefix
from stages.voice.campplus import CAMPPlus
from stages.voice.config import CAMPPlusConfig, S3TokenizerConfig, VoiceEncoderConfig
from stages.voice.s3_tokenizer import S3Tokenizer
from stages.voice.voice_encoder import VoiceEncoder

VE_FILE = "ve.safetensors"  # the VoiceEncoder's own checkpoint file
S3GEN_FILE = "s3gen.safetensors"  # holds tokenizer.* and speaker_encoder.* besides the flow and vocoder
TURBO_S3GEN_FILE = "s3gen_meanflow.safetensors"  # Turbo's: the same tokenizer.* and speaker_encoder.* keys
TOKENIZER_PREFIX = "tokenizer."
CAMPPLUS_PREFIX = "speaker_encoder."
MEL_FILTERS_KEY = "tokenizer._mel_filters"  # constant buffer: read if present, else computed
WINDOW_KEY = "tokenizer.window"  # constant buffer some files carry: ignored


def _schema(make, prefix: str = "") -> Schema:
    with torch.device("meta"):  # shapes only
        return schema_from_module(make(), prefix)


def voice_encoder_schema(cfg: VoiceEncoderConfig) -> Schema:
    return _schema(lambda: VoiceEncoder(cfg))


def tokenizer_schema(cfg: S3TokenizerConfig) -> Schema:
    """The tokenizer's learned weights (with prefix); the constant `_mel_filters` buffer is left out."""
    return {k: v for k, v in _schema(lambda: S3Tokenizer(cfg), TOKENIZER_PREFIX).items() if k != MEL_FILTERS_KEY}


def campplus_schema(cfg: CAMPPlusConfig) -> Schema:
    return _schema(lambda: CAMPPlus(cfg), CAMPPLUS_PREFIX)


def _materialise(module: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load `state` into a meta-built module (no wasted init; its constant buffers are built on the CPU)."""
    module.load_state_dict(state, strict=True, assign=True)
    return module.requires_grad_(False).eval()


def _require_prefix(path: Path, prefix: str, what: str) -> None:
    """A file without any key of `prefix` gets one clear sentence instead of hundreds of missing keys."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            has_prefix = any(k.startswith(prefix) for k in f.keys())
    except Exception:  # an unreadable file: read_checkpoint reports it, naming the file
        return
    if not has_prefix:
        raise CheckpointError(f"{path}: has no {prefix}* tensors ({what}), which voice cloning needs")


def load_voice_encoder(path: str | Path, cfg: VoiceEncoderConfig) -> VoiceEncoder:
    tensors = read_checkpoint(path, voice_encoder_schema(cfg))
    with torch.device("meta"):
        model = VoiceEncoder(cfg)
    return _materialise(model, tensors)


def load_s3_tokenizer(path: str | Path, cfg: S3TokenizerConfig) -> S3Tokenizer:
    path = Path(path)
    if path.is_file():
        _require_prefix(path, TOKENIZER_PREFIX, "the S3 speech tokenizer")
    tensors = read_checkpoint(path, tokenizer_schema(cfg), ignore_prefixes=(MEL_FILTERS_KEY, WINDOW_KEY),
                              only_prefixes=(TOKENIZER_PREFIX,))
    state = strip_prefix(tensors, TOKENIZER_PREFIX)
    state["_mel_filters"] = _stored_mel_filters(path, cfg)
    with torch.device("meta"):
        model = S3Tokenizer(cfg)
    return _materialise(model, state)


def _stored_mel_filters(path: Path, cfg: S3TokenizerConfig) -> torch.Tensor:
    from safetensors import safe_open

    from stages.voice.filters import slaney_mel_filters
    from stages.voice.s3_tokenizer import SAMPLE_RATE

    computed = slaney_mel_filters(SAMPLE_RATE, cfg.n_fft, cfg.n_mels)
    with safe_open(str(path), framework="pt") as f:
        if MEL_FILTERS_KEY not in f.keys():
            return computed.clone()
        t = f.get_tensor(MEL_FILTERS_KEY)
    if tuple(t.shape) != tuple(computed.shape) or not t.is_floating_point():
        raise CheckpointError(f"{path}: {MEL_FILTERS_KEY} is {t.dtype} {list(t.shape)}, expected float {list(computed.shape)}")
    return t.float()


def load_campplus(path: str | Path, cfg: CAMPPlusConfig) -> CAMPPlus:
    path = Path(path)
    if path.is_file():
        _require_prefix(path, CAMPPLUS_PREFIX, "the CAMPPlus x-vector extractor")
    tensors = read_checkpoint(path, campplus_schema(cfg), only_prefixes=(CAMPPLUS_PREFIX,))
    with torch.device("meta"):
        model = CAMPPlus(cfg)
    return _materialise(model, strip_prefix(tensors, CAMPPLUS_PREFIX))


# --- built-in random weights (golden recipe, salt b"") -------------------------------------
def builtin_voice_encoder_weights(cfg: VoiceEncoderConfig) -> dict[str, torch.Tensor]:
    return random_checkpoint(voice_encoder_schema(cfg))


def builtin_tokenizer_weights(cfg: S3TokenizerConfig) -> dict[str, torch.Tensor]:
    """Checkpoint-form tensors (with prefix), the constant mel filterbank included."""
    from stages.voice.filters import slaney_mel_filters
    from stages.voice.s3_tokenizer import SAMPLE_RATE

    out = random_checkpoint(tokenizer_schema(cfg))
    out[MEL_FILTERS_KEY] = slaney_mel_filters(SAMPLE_RATE, cfg.n_fft, cfg.n_mels).clone()
    return out


def builtin_campplus_weights(cfg: CAMPPlusConfig) -> dict[str, torch.Tensor]:
    return random_checkpoint(campplus_schema(cfg))


def build_builtin_voice_encoder(cfg: VoiceEncoderConfig) -> VoiceEncoder:
    with torch.device("meta"):
        model = VoiceEncoder(cfg)
    return _materialise(model, builtin_voice_encoder_weights(cfg))


def build_builtin_s3_tokenizer(cfg: S3TokenizerConfig) -> S3Tokenizer:
    with torch.device("meta"):
        model = S3Tokenizer(cfg)
    return _materialise(model, strip_prefix(builtin_tokenizer_weights(cfg), TOKENIZER_PREFIX))


def build_builtin_campplus(cfg: CAMPPlusConfig) -> CAMPPlus:
    with torch.device("meta"):
        model = CAMPPlus(cfg)
    return _materialise(model, strip_prefix(builtin_campplus_weights(cfg), CAMPPLUS_PREFIX))


def load_voice_models(checkpoint_dir: str | Path | None = None, preset: str = "tiny", device: str = "cpu",
                      model: str | None = None):
    """The conditioning models of a checkpoint folder (ve.safetensors + s3gen.safetensors, or Turbo's
    s3gen_meanflow.safetensors), or the built-in random-weight ones at `preset` sizes when `checkpoint_dir`
    is None. -> stages.voice.conditioning.VoiceModels. `model` ("chatterbox" / "turbo") picks the layout
    of a folder holding both; None = by the files present.

    ve.safetensors is needed only here (voice cloning): a checkpoint without it still runs
    its conds.pt voice, and gets this error only when a voice is made from a recording.
    """
    from stages.voice.conditioning import VoiceModels
    from stages.voice.config import VoiceConfig

    if checkpoint_dir is None:
        cfg = VoiceConfig.from_name(preset)
        models = VoiceModels(cfg, build_builtin_voice_encoder(cfg.ve), build_builtin_s3_tokenizer(cfg.tokenizer),
                             build_builtin_campplus(cfg.campplus))
    else:
        d = Path(checkpoint_dir)
        if model is None:  # Turbo's layout: its meanflow S3Gen file and not the base one
            turbo = (d / TURBO_S3GEN_FILE).is_file() and not (d / S3GEN_FILE).is_file()
        else:
            turbo = model == "turbo"
        s3gen = TURBO_S3GEN_FILE if turbo else S3GEN_FILE
        missing = [f for f in (VE_FILE, s3gen) if not (d / f).is_file()]
        if missing:
            raise CheckpointError(f"{d}: voice cloning needs {' and '.join(missing)} in the checkpoint directory "
                                  "(the model itself runs from conds.pt without ve.safetensors)")
        cfg = VoiceConfig.from_checkpoint_dir(d)
        if turbo:  # Turbo's prompt lengths, minimum and loudness gain (stages/voice/config.py TURBO)
            from dataclasses import replace

            from stages.voice.config import TURBO_OVERRIDES

            cfg = replace(cfg, **TURBO_OVERRIDES)
        models = VoiceModels(cfg, load_voice_encoder(d / VE_FILE, cfg.ve), load_s3_tokenizer(d / s3gen, cfg.tokenizer),
                             load_campplus(d / s3gen, cfg.campplus))
    return models.to(device)
