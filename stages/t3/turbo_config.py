"""Chatterbox Turbo T3 hyperparameters: one frozen dataclass with named presets (`TurboT3Config.from_name`).

Turbo's T3 is a GPT-2 (HF `GPT2Model`, "GPT2_medium") reading [speaker | prompt speech | text | BOS]
embeddings; no perceiver, no emotion token, no T3 position tables, no CFG row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class TurboT3Config:
    # --- GPT-2 backbone ---------------------------------------------------------
    hidden_size: int = 1024  # n_embd
    num_layers: int = 24  # n_layer
    num_heads: int = 16  # n_head (head dim 64)
    intermediate_size: int = 4096  # n_inner None -> 4 x n_embd
    n_positions: int = 8196  # rows of the learned position table `tfmr.wpe` (positions over the whole stream)
    layer_norm_eps: float = 1e-5
    wte_rows: int = 50276  # `tfmr.wte` (GPT-2's own token table): in the file, never used (inputs are embeds)
    # --- vocabularies -----------------------------------------------------------
    text_vocab_size: int = 50276  # rows of text_emb / text_head: 50257 GPT-2 ids + 19 tag tokens
    speech_vocab_size: int = 6563  # rows of speech_emb / speech_head: 6561 codes + start/stop
    start_speech_token: int = 6561  # = 3^8, the BOS fed after the text
    stop_speech_token: int = 6562
    max_text_tokens: int = 1024  # the GPT-2 tokenizer's model_max_length (the reference truncates there)
    # --- conditioning -----------------------------------------------------------
    prompt_len: int = 375  # speech prompt tokens of a voice (15 s at 25 Hz), fed raw (no perceiver)
    speaker_embed_size: int = 256  # VoiceEncoder embedding width

    # --- derived sizes ----------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_kv_heads(self) -> int:
        """GPT-2 has no grouped-query attention (the name KVCachePool reads)."""
        return self.num_heads

    @property
    def num_speech_codes(self) -> int:
        """Ids below this are real S3 speech tokens; 6561/6562 are BOS/EOS."""
        return self.start_speech_token

    def cond_len(self, n_prompt: int) -> int:
        """Conditioning positions: the speaker projection + the raw prompt embeddings."""
        return 1 + n_prompt

    def prefill_len(self, n_text: int, n_prompt: int | None = None) -> int:
        """[speaker | prompt | text | BOS] positions (377 + N with a full 375-token prompt)."""
        return self.cond_len(self.prompt_len if n_prompt is None else n_prompt) + n_text + 1

    def kv_cache_bytes(self, max_len: int, bytes_per_elem: int = 4) -> int:
        """Static KV cache of one request slot (K and V, every layer, one row: no CFG)."""
        return 2 * self.num_layers * self.num_heads * max_len * self.head_dim * bytes_per_elem

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.stop_speech_token >= self.speech_vocab_size or self.start_speech_token >= self.speech_vocab_size:
            raise ValueError("start/stop speech tokens must lie inside the speech vocabulary")

    # --- presets ----------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str) -> "TurboT3Config":
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown Turbo T3 preset {name!r}; choose one of {sorted(PRESETS)}") from None

    @classmethod
    def from_checkpoint_dir(cls, directory: str | Path) -> "TurboT3Config":
        """A Turbo folder's golden-format config.json (`GPT2Config`, `T3Config_used`) if present, else `turbo`."""
        path = Path(directory) / "config.json"
        if not path.is_file():
            return PRESETS["turbo"]
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("GPT2Config"), dict) \
                or not isinstance(data.get("T3Config_used"), dict):
            return PRESETS["turbo"]
        return cls.from_reference_dicts(data["T3Config_used"], data["GPT2Config"], data.get("tokenizer_stand_in"))

    @classmethod
    def from_reference_dicts(cls, hp: dict, gpt2: dict, tokenizer: dict | None = None) -> "TurboT3Config":
        """Build from the reference's own names (T3Config fields, GPT2Config fields)."""
        if gpt2.get("activation_function", "gelu_new") != "gelu_new":
            raise ValueError(f"unsupported GPT-2 activation {gpt2.get('activation_function')!r} (only gelu_new)")
        hidden = int(gpt2["n_embd"])
        inner = gpt2.get("n_inner")
        return cls(
            hidden_size=hidden,
            num_layers=int(gpt2["n_layer"]),
            num_heads=int(gpt2["n_head"]),
            intermediate_size=int(inner) if inner else 4 * hidden,
            n_positions=int(gpt2["n_positions"]),
            layer_norm_eps=float(gpt2.get("layer_norm_epsilon", 1e-5)),
            wte_rows=int(gpt2["vocab_size"]),
            text_vocab_size=int(hp["text_tokens_dict_size"]),
            speech_vocab_size=int(hp["speech_tokens_dict_size"]),
            start_speech_token=int(hp["start_speech_token"]),
            stop_speech_token=int(hp["stop_speech_token"]),
            max_text_tokens=int((tokenizer or {}).get("model_max_length", 1024)),
            prompt_len=int(hp.get("speech_cond_prompt_len", 375)),
            speaker_embed_size=int(hp.get("speaker_embed_size", 256)),
        )


_TURBO = TurboT3Config()  # GPT2_medium, the released t3_turbo_v1.safetensors

PRESETS: dict[str, TurboT3Config] = {
    "turbo": _TURBO,
    # CPU-sized: the real widths, vocabularies and position table (so per-layer and per-token costs
    # are the real ones) but 4 of the 24 layers, like `small` for the base model. ~123 M parameters
    # in the model, 59 M of them the text/position/speech tables.
    "turbo-small": replace(_TURBO, num_layers=4),
    # The golden turbo-tiny checkpoint (GPT2_harness_turbo_tiny): its built-in weights by the golden
    # recipe are the golden t3_turbo_v1.safetensors bit for bit.
    "turbo-tiny": replace(_TURBO, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=128,
                          n_positions=2048, wte_rows=1000, text_vocab_size=1000),
}
