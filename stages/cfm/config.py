"""CFM-stage (S3Gen flow) hyperparameters: one frozen dataclass with named presets (`CFMConfig.from_name`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class CFMConfig:
    # --- token side -------------------------------------------------------------
    vocab_size: int = 6561  # S3 speech codebook (3^8); ids >= this are control tokens and never reach the flow
    input_size: int = 512  # width of flow.input_embedding
    spk_embed_dim: int = 192  # CAMPPlus x-vector width (conds.pt gen.embedding)
    n_mels: int = 80  # mel bins; the reference hard-codes 80 in solve_euler
    token_mel_ratio: int = 2  # 25 Hz tokens -> 50 Hz mel frames
    pre_lookahead_len: int = 3  # tokens of right context the encoder's first conv reads
    # --- UpsampleConformerEncoder -------------------------------------------------
    encoder_dim: int = 512  # attention width (reference `output_size`)
    encoder_heads: int = 8
    encoder_linear_units: int = 2048  # feed-forward hidden width
    encoder_blocks: int = 6  # conformer layers at the token rate
    encoder_up_blocks: int = 4  # conformer layers after the x2 upsampling (reference hard-codes 4)
    encoder_ln_eps: float = 1e-12  # ConformerEncoderLayer norm_mha / norm_ff (ESPnet default)
    embed_ln_eps: float = 1e-5  # embed / up_embed / after_norm LayerNorms
    # --- estimator (ConditionalDecoder) ------------------------------------------------
    estimator_in: int = 320  # concat[x, mu, spks, cond] = 4 x n_mels; also the sinusoidal time-embedding width
    estimator_channels: int = 256  # the single U-Net level (reference `channels=[256]`)
    estimator_n_blocks: int = 4  # transformer blocks per U-Net block
    estimator_mid_blocks: int = 12
    estimator_heads: int = 8
    estimator_head_dim: int = 64
    # --- sampler ----------------------------------------------------------------
    n_timesteps: int = 10  # Euler steps on the cosine grid
    cfg_rate: float = 0.7  # classifier-free guidance: (1 + r) v_cond - r v_uncond

    # --- derived sizes ----------------------------------------------------------
    @property
    def time_embed_dim(self) -> int:
        """Width of the estimator's time MLP output (reference: channels[0] * 4)."""
        return self.estimator_channels * 4

    @property
    def lookahead_frames(self) -> int:
        """Mel frames dropped from the end when finalize=False (lookahead tokens x token_mel_ratio)."""
        return self.pre_lookahead_len * self.token_mel_ratio

    def mel_frames(self, n_tokens: int, finalize: bool) -> int:
        """Frames `Flow.encode` returns for `n_tokens` tokens (never negative)."""
        frames = n_tokens * self.token_mel_ratio
        return frames if finalize else max(0, frames - self.lookahead_frames)

    def __post_init__(self) -> None:
        if self.input_size != self.encoder_dim:
            # up_embed applies Linear(input_size, encoder_dim) to the up-sampled encoder_dim-wide states
            raise ValueError(f"input_size {self.input_size} must equal encoder_dim {self.encoder_dim}")
        if self.encoder_dim % self.encoder_heads:
            raise ValueError(f"encoder_dim {self.encoder_dim} is not a multiple of encoder_heads {self.encoder_heads}")
        if self.estimator_in != 4 * self.n_mels:
            raise ValueError(f"estimator_in {self.estimator_in} must be 4 x n_mels (x, mu, spks, cond)")
        if self.estimator_in % 2:
            raise ValueError("estimator_in must be even (sin | cos halves of the time embedding)")
        if self.n_timesteps < 1:
            raise ValueError(f"n_timesteps must be >= 1, got {self.n_timesteps}")

    # --- presets ----------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str) -> "CFMConfig":
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown CFM preset {name!r}; known: {sorted(PRESETS)}") from None

    @classmethod
    def from_checkpoint_dir(cls, path: str | Path) -> "CFMConfig":
        """The config of a checkpoint folder: golden-format `config.json` ("s3gen" section) if present, else chatterbox."""
        cfg_file = Path(path) / "config.json"
        if not cfg_file.is_file():
            return CHATTERBOX
        data = json.loads(cfg_file.read_text())
        s3 = data.get("s3gen") if isinstance(data, dict) else None
        if not isinstance(s3, dict):
            return CHATTERBOX
        return _from_reference_dict(s3)


def _from_reference_dict(s3: dict) -> CFMConfig:
    """Map the reference's class/argument names (golden config.json layout) onto CFMConfig."""
    enc = s3.get("UpsampleConformerEncoder", {})
    dec = s3.get("ConditionalDecoder", {})
    flow = s3.get("CausalMaskedDiffWithXvec", {})
    cfm = s3.get("CausalConditionalCFM", {})
    up = s3.get("num_up_encoders", {})
    channels = dec.get("channels", [CHATTERBOX.estimator_channels])
    if len(channels) != 1:
        raise ValueError(f"only a single-level ConditionalDecoder is supported, got channels={channels}")
    base = CHATTERBOX
    return replace(
        base,
        vocab_size=flow.get("vocab_size", base.vocab_size),
        input_size=flow.get("input_size", enc.get("input_size", base.input_size)),
        spk_embed_dim=flow.get("spk_embed_dim", base.spk_embed_dim),
        n_mels=flow.get("output_size", base.n_mels),
        token_mel_ratio=flow.get("token_mel_ratio", base.token_mel_ratio),
        pre_lookahead_len=flow.get("pre_lookahead_len", base.pre_lookahead_len),
        encoder_dim=enc.get("output_size", base.encoder_dim),
        encoder_heads=enc.get("attention_heads", base.encoder_heads),
        encoder_linear_units=enc.get("linear_units", base.encoder_linear_units),
        encoder_blocks=enc.get("num_blocks", base.encoder_blocks),
        encoder_up_blocks=up.get("value", base.encoder_up_blocks) if isinstance(up, dict) else int(up),
        estimator_in=dec.get("in_channels", base.estimator_in),
        estimator_channels=channels[0],
        estimator_n_blocks=dec.get("n_blocks", base.estimator_n_blocks),
        estimator_mid_blocks=dec.get("num_mid_blocks", base.estimator_mid_blocks),
        estimator_heads=dec.get("num_heads", base.estimator_heads),
        estimator_head_dim=dec.get("attention_head_dim", base.estimator_head_dim),
        n_timesteps=cfm.get("n_timesteps_used_by_inference", base.n_timesteps),
        cfg_rate=cfm.get("cfm_params", {}).get("inference_cfg_rate", base.cfg_rate),
    )


# The released model (ResembleAI/chatterbox s3gen.safetensors, flow.*).
CHATTERBOX = CFMConfig()

# The golden fixtures' scale (tests/data/golden_tiny/config.json): loads tests/data/golden_tiny/s3gen.safetensors.
TINY = replace(
    CHATTERBOX,
    input_size=64,
    encoder_dim=64,
    encoder_heads=2,
    encoder_linear_units=128,
    encoder_blocks=2,
    encoder_up_blocks=1,
    estimator_channels=32,
    estimator_n_blocks=1,
    estimator_mid_blocks=1,
    estimator_heads=2,
    estimator_head_dim=24,
)

# CPU-sized stand-in with the real layer widths and a quarter-ish of the depth, so per-layer costs
# (and hence benchmark extrapolations to `chatterbox`) are realistic: encoder 2 + 1 layers (real 6 + 4),
# estimator 1 transformer block per U-Net block and 2 mid blocks (real 4 and 12).
SMALL = replace(
    CHATTERBOX,
    encoder_blocks=2,
    encoder_up_blocks=1,
    estimator_n_blocks=1,
    estimator_mid_blocks=2,
)

PRESETS: dict[str, CFMConfig] = {"chatterbox": CHATTERBOX, "tiny": TINY, "small": SMALL}
