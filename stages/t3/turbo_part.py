"""The T3 stage's part of a Chatterbox Turbo model: t3_turbo_v1.safetensors, the GPT-2 tokenizer files and the
`t3` half of conds.pt (or the built-in turbo presets), served by the same batched tick as the base model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages.common.layout import TURBO, TURBO_PRESETS, detect_model
from stages.common.spec import CONDS_FILE, ModelSpec
from stages.t3.batch import T3Batch
from stages.t3.part import T3Part
from stages.t3.prefix_cache import DEFAULT_PREFIX_CACHE_SIZE
from stages.t3.turbo_checkpoint import T3_TURBO_FILE, build_builtin_turbo_t3, load_turbo_t3
from stages.t3.turbo_conds import builtin_turbo_t3_conditionals, load_turbo_t3_conditionals
from stages.t3.turbo_config import TurboT3Config
from stages.t3.turbo_text import TurboTokenizer, encode_turbo_text
from stages.t3.turbo_tick import TURBO_MAX_LEN, TurboTickModel
from stages.t3.voices import VoiceResolver, VoiceTable


def check_turbo_preset(spec: ModelSpec) -> str:
    if spec.builtin and spec.preset not in TURBO_PRESETS:
        raise ValueError(f"unknown Turbo preset {spec.preset!r}; choose one of {', '.join(sorted(TURBO_PRESETS))}")
    return spec.preset


@dataclass
class TurboT3Part(T3Part):
    model = TURBO

    def encode(self, text: str) -> list[int]:
        """Text -> validated text ids (Turbo's punc_norm + the GPT-2 tokenizer); ValueError naming `text`."""
        return encode_turbo_text(text, self.tokenizer, self.cfg)

    def default_voices(self) -> VoiceResolver:
        return VoiceTable.default_only(self.conds, self.cfg)


def load_turbo_model(spec: ModelSpec):
    """(model, config, tokenizer, default voice) of the spec's Turbo T3."""
    if spec.builtin:
        cfg = TurboT3Config.from_name(check_turbo_preset(spec))
        return build_builtin_turbo_t3(cfg), cfg, TurboTokenizer.builtin(), builtin_turbo_t3_conditionals(cfg)
    d = Path(spec.checkpoint)
    detect_model(d, TURBO)
    cfg = TurboT3Config.from_checkpoint_dir(d)
    return (load_turbo_t3(d / T3_TURBO_FILE, cfg), cfg, TurboTokenizer.from_dir(d),
            load_turbo_t3_conditionals(d / CONDS_FILE, cfg))


def load_turbo_t3_part(spec: ModelSpec, max_slots: int = 4, max_len: int = TURBO_MAX_LEN,
                       prefix_cache_size: int = DEFAULT_PREFIX_CACHE_SIZE) -> TurboT3Part:
    model, cfg, tok, conds = load_turbo_model(spec)
    max_len = min(max_len, cfg.n_positions)  # wpe has no row past n_positions - 1
    if max_len < cfg.prefill_len(1, conds.n_prompt) + 1:
        raise ValueError(f"max_len {max_len} is shorter than the smallest request ({cfg.prefill_len(1, conds.n_prompt) + 1})")
    tick = TurboTickModel(model, cfg, spec.device, spec.torch_dtype)
    return TurboT3Part(T3Batch(tick, max_slots, max_len, prefix_cache_size), tok, conds, cfg)
