"""Loading each stage's part of the model: from a checkpoint directory, or the built-in random-weight model.

Each stage process calls only its own loader, so it reads only its part of the checkpoint:
T3: t3_cfg.safetensors, tokenizer.json, conds.pt "t3"; CFM: s3gen.safetensors flow.*,
conds.pt "gen"; HiFiGAN: s3gen.safetensors mel2wav.*. The single-process path calls all three.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.common.weights import CheckpointError

# Files of the public checkpoint layout (HF ResembleAI/chatterbox) this engine reads.
T3_FILE, S3GEN_FILE, TOKENIZER_FILE, CONDS_FILE = "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt"
REQUIRED_FILES = (T3_FILE, S3GEN_FILE, TOKENIZER_FILE, CONDS_FILE)
BUILTIN_PRESET = "tiny"  # the built-in model: tiny sizes, weights made from each tensor's name and shape
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SEED_DOMAINS = ("t3", "cfm", "hifigan")


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to run: a checkpoint directory, or the built-in model at `preset` sizes."""

    checkpoint: Path | None = None
    preset: str = BUILTIN_PRESET
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def builtin(self) -> bool:
        return self.checkpoint is None

    def describe(self) -> str:
        return f"checkpoint {self.checkpoint}" if self.checkpoint else f"built-in random-weight model (preset {self.preset})"

    def check(self) -> "ModelSpec":
        """Fail early, with every problem named, before any process starts."""
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.checkpoint is not None:
            d = Path(self.checkpoint)
            if not d.is_dir():
                raise CheckpointError(f"{d}: checkpoint directory not found")
            missing = [f for f in REQUIRED_FILES if not (d / f).is_file()]
            if missing:
                raise CheckpointError(f"{d}: checkpoint directory is missing {', '.join(missing)}")
        return self


def warn_if_builtin(spec: ModelSpec) -> None:
    if spec.builtin:
        msg = f"warning: no --checkpoint given: using the {spec.describe()}; the audio is noise, not speech"
        print(msg, file=sys.stderr)


def derive_seed(seed: int, domain: str) -> int:
    """A per-stage seed from the request seed, so stages draw independent streams reproducibly."""
    h = hashlib.blake2b(f"{domain}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


# The request's randomness, made in one place: streaming (in any process) and offline
# synthesis must draw exactly the same values for the same seed.
def cfm_noise(seed: int):
    """The flow solver's position-indexed noise of a request."""
    from stages.cfm.noise import NoiseSource

    return NoiseSource(derive_seed(seed, "cfm"))


def vocoder_generator(hift, seed: int) -> torch.Generator:
    """The generator of a request's harmonic-source phase and noise, on the vocoder's device."""
    return torch.Generator(device=hift.stft_window.device).manual_seed(derive_seed(seed, "hifigan"))


@dataclass
class T3Part:
    generator: object  # stages.t3.generate.T3Generator
    tokenizer: object  # stages.t3.text.TextTokenizer
    conds: object  # stages.t3.conds.T3Conditionals


def load_t3_part(spec: ModelSpec, max_slots: int = 4) -> T3Part:
    from stages.t3.checkpoint import build_builtin_t3, load_t3
    from stages.t3.conds import builtin_t3_conditionals, load_t3_conditionals
    from stages.t3.config import T3Config
    from stages.t3.generate import T3Generator
    from stages.t3.text import TextTokenizer

    dtype = DTYPES[spec.dtype]
    if spec.builtin:
        cfg = T3Config.from_name(spec.preset)
        model = build_builtin_t3(cfg)
        tok, conds = TextTokenizer.builtin(), builtin_t3_conditionals(cfg)
    else:
        d = Path(spec.checkpoint)
        cfg = T3Config.from_checkpoint_dir(d)
        model = load_t3(d / T3_FILE, cfg)
        tok, conds = TextTokenizer.from_file(d / TOKENIZER_FILE), load_t3_conditionals(d / CONDS_FILE, cfg)
    gen = T3Generator(model, cfg, max_slots=max_slots, device=spec.device, dtype=dtype)
    return T3Part(gen, tok, conds)


@dataclass
class CFMPart:
    flow: object  # stages.cfm.flow.Flow
    conds: object  # stages.cfm.conds.FlowConditionals


def load_cfm_part(spec: ModelSpec) -> CFMPart:
    from stages.cfm.checkpoint import build_builtin_flow, load_flow
    from stages.cfm.conds import builtin_flow_conditionals, load_flow_conditionals
    from stages.cfm.config import CFMConfig

    if spec.builtin:
        cfg = CFMConfig.from_name(spec.preset)
        flow, conds = build_builtin_flow(cfg), builtin_flow_conditionals(cfg)
    else:
        d = Path(spec.checkpoint)
        cfg = CFMConfig.from_checkpoint_dir(d)
        flow, conds = load_flow(d / S3GEN_FILE, cfg), load_flow_conditionals(d / CONDS_FILE, cfg)
    flow = flow.to(spec.device, DTYPES[spec.dtype]).eval()
    return CFMPart(flow, conds.to(spec.device))


def load_hifigan_part(spec: ModelSpec):
    """-> stages.hifigan.generator.HiFT (always float32: the vocoder is small and phase-sensitive)."""
    from stages.hifigan.checkpoint import build_builtin_hift, load_hift
    from stages.hifigan.config import HiFTConfig

    if spec.builtin:
        hift = build_builtin_hift(HiFTConfig.from_name(spec.preset))
    else:
        d = Path(spec.checkpoint)
        hift = load_hift(d / S3GEN_FILE, HiFTConfig.from_checkpoint_dir(d))
    return hift.to(spec.device).eval()
