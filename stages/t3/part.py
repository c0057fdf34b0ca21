"""The T3 stage's part of the model: t3_cfg.safetensors, tokenizer.json and the `t3` half of conds.pt (or the built-in model)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages.common.spec import CONDS_FILE, T3_FILE, TOKENIZER_FILE, ModelSpec
from stages.t3.checkpoint import build_builtin_t3, load_t3
from stages.t3.conds import T3Conditionals, builtin_t3_conditionals, load_t3_conditionals
from stages.t3.config import T3Config
from stages.t3.generate import T3Generator
from stages.t3.text import TextTokenizer


@dataclass
class T3Part:
    generator: T3Generator
    tokenizer: TextTokenizer
    conds: T3Conditionals  # the default voice


def load_t3_part(spec: ModelSpec, max_slots: int = 4) -> T3Part:
    if spec.builtin:
        cfg = T3Config.from_name(spec.preset)
        model = build_builtin_t3(cfg)
        tok, conds = TextTokenizer.builtin(), builtin_t3_conditionals(cfg)
    else:
        d = Path(spec.checkpoint)
        cfg = T3Config.from_checkpoint_dir(d)
        model = load_t3(d / T3_FILE, cfg)
        tok, conds = TextTokenizer.from_file(d / TOKENIZER_FILE), load_t3_conditionals(d / CONDS_FILE, cfg)
    gen = T3Generator(model, cfg, max_slots=max_slots, device=spec.device, dtype=spec.torch_dtype)
    return T3Part(gen, tok, conds)
