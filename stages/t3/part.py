"""The T3 stage's part of the model: t3_cfg.safetensors, tokenizer.json and the `t3` half of conds.pt (or the built-in model)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages.common.layout import CHATTERBOX
from stages.common.spec import CONDS_FILE, T3_FILE, TOKENIZER_FILE, ModelSpec
from stages.t3.batch import DEFAULT_MAX_LEN, T3Batch
from stages.t3.checkpoint import build_builtin_t3, load_t3
from stages.t3.conds import T3Conditionals, builtin_t3_conditionals, load_t3_conditionals
from stages.t3.config import T3Config
from stages.t3.generate import new_t3_batch
from stages.t3.graphs import attach_tick_graphs, graphs_wanted
from stages.t3.prefix_cache import DEFAULT_PREFIX_CACHE_SIZE
from stages.t3.text import TextTokenizer, encode_text
from stages.t3.voices import VoiceResolver, VoiceTable


@dataclass
class T3Part:
    batch: T3Batch  # the tick: model, KV-cache slots, prefix cache
    tokenizer: TextTokenizer
    conds: T3Conditionals  # the checkpoint's own voice
    cfg: T3Config
    model = CHATTERBOX  # the family (stages/common/layout.py): which request parameters apply

    def encode(self, text: str) -> list[int]:
        """Text -> validated text ids (punc_norm + tokenizer); ValueError naming `text`."""
        return encode_text(text, self.tokenizer, self.cfg)

    def default_voices(self) -> VoiceResolver:
        return VoiceTable.default_only(self.conds, self.cfg)


def load_t3_part(spec: ModelSpec, max_slots: int = 4, max_len: int | None = None,
                 prefix_cache_size: int = DEFAULT_PREFIX_CACHE_SIZE, cuda_graphs: bool | None = None) -> T3Part:
    """The spec's T3 (Chatterbox or Turbo, by `spec.kind`) on the batched tick; max_len None = the family's default.

    cuda_graphs: capture the tick as CUDA graphs (stages/t3/graphs.py); None = on a CUDA device only (base model;
    Turbo's tick runs uncaptured)."""
    if spec.turbo:
        from stages.t3.turbo_part import TURBO_MAX_LEN, load_turbo_t3_part

        return load_turbo_t3_part(spec, max_slots, max_len or TURBO_MAX_LEN, prefix_cache_size)
    max_len = max_len or DEFAULT_MAX_LEN
    if spec.builtin:
        cfg = T3Config.from_name(spec.preset)
        model = build_builtin_t3(cfg)
        tok, conds = TextTokenizer.builtin(), builtin_t3_conditionals(cfg)
    else:
        d = Path(spec.checkpoint)
        cfg = T3Config.from_checkpoint_dir(d)
        model = load_t3(d / T3_FILE, cfg)
        tok, conds = TextTokenizer.from_file(d / TOKENIZER_FILE), load_t3_conditionals(d / CONDS_FILE, cfg)
    batch = new_t3_batch(model, cfg, max_slots=max_slots, max_len=max_len, device=spec.device,
                         dtype=spec.torch_dtype, prefix_cache_size=prefix_cache_size)
    if graphs_wanted(spec.device, cuda_graphs):
        attach_tick_graphs(batch)
    return T3Part(batch, tok, conds, cfg)
