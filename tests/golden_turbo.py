"""The Chatterbox Turbo golden fixtures (../shared/golden/turbo-tiny, reference outputs with random weights).

tests/data/golden_turbo_tiny holds what the tests read: README, cases.json, config.json,
weights_manifest.json, the case tensors, conds.pt and the GPT-2 tokenizer files. The three
checkpoints (7 MB) are not copied: `write_turbo_checkpoint` rebuilds them from the weight recipe
and test_turbo_weights.py proves them equal to the golden files, tensor by tensor, through the
manifest's SHA-1s (`tokenizer._mel_filters` / `tokenizer.window`, constant buffers the recipe
does not make and nothing here reads, are the only exceptions).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from functools import lru_cache
from pathlib import Path

import torch

from tests.golden import rel_l2  # noqa: F401  (the fixtures' metric, re-exported)

TURBO_DIR = Path(__file__).parent / "data" / "golden_turbo_tiny"
COPIED_FILES = ("config.json", "conds.pt", "vocab.json", "merges.txt", "added_tokens.json",
                "special_tokens_map.json", "tokenizer_config.json")
CONSTANT_BUFFERS = ("tokenizer._mel_filters", "tokenizer.window")  # S3Tokenizer constants, kept as constructed


@lru_cache(maxsize=None)
def cases() -> dict:
    return json.loads((TURBO_DIR / "cases.json").read_text())["cases"]


@lru_cache(maxsize=None)
def manifest() -> dict:
    return json.loads((TURBO_DIR / "weights_manifest.json").read_text())


def load_case(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(TURBO_DIR / f"{name}.safetensors"))


def scalars(case: str) -> dict:
    return cases()[case].get("scalars") or {}


def tolerance(case: str, tensor: str | None = None) -> float:
    """The README's rel-L2 tolerance for a case; a numeric per-tensor override when there is one
    (textual per-tensor rules such as "exact" are applied by the tests themselves)."""
    tol = cases()[case]["tolerance"]
    per = tol.get("per_tensor", {})
    if tensor is not None and isinstance(per.get(tensor), (int, float)):
        return float(per[tensor])
    return float(tol["rel_l2"])


def sha1_12(t: torch.Tensor) -> str:
    """The manifest's fingerprint: first 12 hex digits of SHA-1 of the little-endian float32 bytes."""
    return hashlib.sha1(t.detach().float().contiguous().numpy().tobytes()).hexdigest()[:12]


def recipe_checkpoints() -> dict[str, dict[str, torch.Tensor]]:
    """The three Turbo checkpoint files rebuilt from the golden recipe (file name -> tensors)."""
    from pipeline.turbo import voice_encoder_schema
    from stages.cfm.meanflow import builtin_meanflow_checkpoint, meanflow_config
    from stages.common.weights import MATRIX, VECTOR, TensorSpec, random_checkpoint
    from stages.hifigan.checkpoint import builtin_checkpoint
    from stages.hifigan.config import HiFTConfig
    from stages.t3.turbo_checkpoint import builtin_turbo_t3_checkpoint
    from stages.t3.turbo_config import TurboT3Config
    from stages.voice.filters import slaney_mel_filters

    s3_manifest = manifest()["s3gen_meanflow.safetensors"]
    tokenizer_schema = {k: TensorSpec(tuple(v["shape"]), v["branch"] if k not in CONSTANT_BUFFERS
                                      else (MATRIX if len(v["shape"]) > 1 else VECTOR))
                        for k, v in s3_manifest.items() if k.startswith("tokenizer.")}
    s3gen = {**builtin_meanflow_checkpoint(meanflow_config("turbo-tiny")),
             **builtin_checkpoint(HiFTConfig.from_name("tiny")),
             **random_checkpoint(tokenizer_schema)}
    # the constants as the reference constructs them (bit-identical to the golden file's), not random
    s3gen["tokenizer._mel_filters"] = slaney_mel_filters(16000, 400, 128).float()  # librosa mel(16 kHz, 400, 128)
    s3gen["tokenizer.window"] = torch.hann_window(400)  # the tokenizer's STFT window
    return {
        "t3_turbo_v1.safetensors": builtin_turbo_t3_checkpoint(TurboT3Config.from_name("turbo-tiny")),
        "s3gen_meanflow.safetensors": s3gen,
        "ve.safetensors": random_checkpoint(voice_encoder_schema(32)),  # VoiceEncConfig.ve_hidden_size
    }


def write_turbo_checkpoint(directory: Path, files: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """A complete Turbo checkpoint folder (the golden one, rebuilt) in `directory`."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    for name, tensors in (files or recipe_checkpoints()).items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / name))
    for name in COPIED_FILES:
        shutil.copy(TURBO_DIR / name, directory / name)
    return directory
