"""T3 hyperparameters: one frozen dataclass with named presets (`T3Config.from_name`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class T3Config:
    # --- Llama backbone -------------------------------------------------------
    hidden_size: int = 1024
    num_layers: int = 30
    num_heads: int = 16
    num_kv_heads: int = 16  # == num_heads in Llama_520M; fewer would mean grouped-query attention
    head_dim: int = 64
    intermediate_size: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_factor: float = 8.0  # llama3 scaling: long wavelengths are divided by this
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192
    backbone_vocab_size: int = 8  # `tfmr.embed_tokens` is a dummy in the checkpoint (inputs are embeds)
    # --- token vocabularies -----------------------------------------------------
    text_vocab_size: int = 704  # rows of text_emb / text_head (EN tokenizer.json)
    speech_vocab_size: int = 8194  # rows of speech_emb / speech_head: 6561 codes + start/stop + spare
    start_text_token: int = 255
    stop_text_token: int = 0
    start_speech_token: int = 6561  # = 3^8, first id past the S3 codebook
    stop_speech_token: int = 6562
    max_text_tokens: int = 2048  # text_pos_emb has max_text_tokens + 2 rows (start/stop padding)
    max_speech_tokens: int = 4096  # speech_pos_emb has max_speech_tokens + 4 rows
    # --- conditioning -----------------------------------------------------------
    prompt_len: int = 150  # speech prompt tokens (6 s at 25 Hz) fed to the perceiver
    perceiver_queries: int = 32  # learned queries = conditioning tokens produced from the prompt
    perceiver_heads: int = 4
    speaker_embed_size: int = 256  # VoiceEncoder embedding width

    # --- derived sizes ----------------------------------------------------------
    @property
    def text_pos_rows(self) -> int:
        return self.max_text_tokens + 2

    @property
    def speech_pos_rows(self) -> int:
        return self.max_speech_tokens + 4

    @property
    def cond_len(self) -> int:
        """Conditioning tokens in front of the text: speaker (1) + perceiver queries + emotion (1)."""
        return 1 + self.perceiver_queries + 1

    @property
    def num_speech_codes(self) -> int:
        """Ids below this are real S3 speech tokens; everything at or above is a control/spare id."""
        return self.start_speech_token

    def prefill_len(self, n_text: int) -> int:
        """Prefill length for `n_text` unpadded text tokens: cond + [255] text [0] + BOS + BOS."""
        return self.cond_len + n_text + 2 + 2

    def kv_cache_bytes(self, max_len: int, bytes_per_elem: int = 4, cfg_rows: int = 2) -> int:
        """Static KV cache of one request slot (K and V, every layer, both CFG rows)."""
        return 2 * self.num_layers * cfg_rows * self.num_kv_heads * max_len * self.head_dim * bytes_per_elem

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.hidden_size % self.perceiver_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of perceiver_heads {self.perceiver_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even (rotary pairs)")

    # --- presets ----------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str) -> "T3Config":
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown T3 preset {name!r}; choose one of {sorted(PRESETS)}") from None

    @classmethod
    def from_checkpoint_dir(cls, directory: str | Path) -> "T3Config":
        """The config of a checkpoint folder: its golden-format config.json if present, else `chatterbox`."""
        path = Path(directory) / "config.json"
        if not path.is_file():
            return PRESETS["chatterbox"]
        data = json.loads(path.read_text())
        t3 = data.get("t3") if isinstance(data, dict) else None
        if not isinstance(t3, dict) or "T3Config" not in t3 or "llama_config" not in t3:
            return PRESETS["chatterbox"]
        return cls.from_reference_dicts(t3["T3Config"], t3["llama_config"], t3.get("Perceiver", {}))

    @classmethod
    def from_reference_dicts(cls, hp: dict, llama: dict, perceiver: dict | None = None) -> "T3Config":
        """Build from the reference's own names (`T3Config` fields and the Llama config dict)."""
        perceiver = perceiver or {}
        rope = llama.get("rope_scaling") or {}
        if rope and rope.get("rope_type", "llama3") != "llama3":
            raise ValueError(f"unsupported rope_scaling type {rope.get('rope_type')!r} (only llama3)")
        hidden = int(llama["hidden_size"])
        heads = int(llama["num_attention_heads"])
        return cls(
            hidden_size=hidden,
            num_layers=int(llama["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(llama.get("num_key_value_heads", heads)),
            head_dim=int(llama.get("head_dim", hidden // heads)),
            intermediate_size=int(llama["intermediate_size"]),
            rms_norm_eps=float(llama.get("rms_norm_eps", 1e-5)),
            rope_theta=float(llama.get("rope_theta", 500000.0)),
            rope_factor=float(rope.get("factor", 8.0)),
            rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
            rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
            rope_original_max_positions=int(rope.get("original_max_position_embeddings", 8192)),
            backbone_vocab_size=int(llama.get("vocab_size", 8)),
            text_vocab_size=int(hp["text_tokens_dict_size"]),
            speech_vocab_size=int(hp["speech_tokens_dict_size"]),
            start_text_token=int(hp["start_text_token"]),
            stop_text_token=int(hp["stop_text_token"]),
            start_speech_token=int(hp["start_speech_token"]),
            stop_speech_token=int(hp["stop_speech_token"]),
            max_text_tokens=int(hp["max_text_tokens"]),
            max_speech_tokens=int(hp["max_speech_tokens"]),
            prompt_len=int(hp.get("speech_cond_prompt_len", 150)),
            perceiver_queries=int(perceiver.get("pre_attention_query_token", 32)),
            perceiver_heads=int(perceiver.get("num_attn_heads", 4)),
            speaker_embed_size=int(hp.get("speaker_embed_size", 256)),
        )


_CHATTERBOX = T3Config()  # Llama_520M, the English Chatterbox checkpoint (t3_cfg.safetensors)

PRESETS: dict[str, T3Config] = {
    "chatterbox": _CHATTERBOX,
    # The golden test checkpoint (tests/data/golden_tiny/config.json, "Llama_harness_tiny").
    "tiny": replace(_CHATTERBOX, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=8,
                    intermediate_size=80),
    # CPU-sized: the real width and vocabularies (so per-layer costs are the real ones) but 4 of the
    # 30 layers; ~96 M parameters, ~29 M of them embeddings and heads. For CPU benchmarks and demos.
    "small": replace(_CHATTERBOX, num_layers=4),
}
