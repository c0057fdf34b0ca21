"""Voice-conditioning hyperparameters: VoiceEncoder, S3Tokenizer, CAMPPlus and the conditioning lengths.

One frozen dataclass per model plus `VoiceConfig` (all three and the reference's prompt
lengths), with named presets (`VoiceConfig.from_name`) matching the other stages' presets.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class VoiceEncoderConfig:
    """The speaker encoder of T3 (`ve.safetensors`; reference VoiceEncConfig)."""

    sample_rate: int = 16_000  # Hz; the encoder's input rate
    n_mels: int = 40  # power-mel bins
    n_fft: int = 400  # 25 ms window
    hop: int = 160  # 10 ms: 100 frames per second
    fmax: float = 8000.0  # Hz
    hidden_size: int = 256  # LSTM width
    num_layers: int = 3  # stacked LSTM layers
    embed_size: int = 256  # speaker embedding width (T3's speaker_embed_size)
    partial_frames: int = 160  # 1.6 s per partial utterance
    partial_rate: float = 1.3  # partials per second (reference `rate`): step round(16000 / 1.3 / 160) = 77 frames
    min_coverage: float = 0.8  # the last partial is kept (zero-padded) if it covers this much of 160 frames
    trim_top_db: float = 20.0  # librosa.effects.trim threshold below the loudest frame
    batch_size: int = 32  # partials per LSTM batch (as the reference; batching changes fp rounding)

    @property
    def frame_step(self) -> int:
        """Frames between partial starts (reference get_frame_step with rate=1.3: 77)."""
        return int(round((self.sample_rate / self.partial_rate) / self.partial_frames))


@dataclass(frozen=True)
class S3TokenizerConfig:
    """The 25 Hz speech tokenizer (S3TokenizerV2 'speech_tokenizer_v2_25hz'; `tokenizer.*` of s3gen.safetensors)."""

    n_mels: int = 128  # log-mel bins at 16 kHz
    n_fft: int = 400  # 25 ms window
    hop: int = 160  # 10 ms: 100 mel frames per second, 4 per token
    width: int = 1280  # n_audio_state
    heads: int = 20  # n_audio_head; head dim must be 64 (the RoPE table is built for 64 dims)
    layers: int = 6  # n_audio_layer
    fsmn_kernel: int = 31  # depthwise memory conv over V
    rope_positions: int = 2048  # rows of the RoPE table (precompute_freqs_cis(64, 2048))
    rope_theta: float = 10_000.0
    max_frames: int = 3000  # 30 s of mel: longer input would need the reference's sliding windows

    def __post_init__(self) -> None:
        if self.width % self.heads or self.width // self.heads != 64:
            raise ValueError(f"S3Tokenizer head dim must be 64 (width {self.width} / heads {self.heads})")


@dataclass(frozen=True)
class CAMPPlusConfig:
    """The flow's x-vector extractor (CAMPPlus; `speaker_encoder.*` of s3gen.safetensors)."""

    feat_dim: int = 80  # Kaldi fbank bins
    m_channels: int = 32  # FCM head width (hard-coded 32 in the reference)
    growth_rate: int = 32  # channels each CAM-dense layer adds
    bn_size: int = 4  # bottleneck = bn_size * growth_rate
    init_channels: int = 128  # TDNN output
    block_layers: tuple[int, ...] = (12, 24, 16)  # CAM-dense layers per block
    block_dilations: tuple[int, ...] = (1, 2, 2)
    embed_size: int = 192  # x-vector width (the flow's spk_embed_dim)
    seg_len: int = 100  # frames per segment of the CAM context pooling

    @property
    def head_out(self) -> int:
        """FCM output channels: m_channels x (feat_dim / 8) frequency rows after three stride-2 stages."""
        return self.m_channels * (self.feat_dim // 8)


@dataclass(frozen=True)
class VoiceConfig:
    ve: VoiceEncoderConfig = field(default_factory=VoiceEncoderConfig)
    tokenizer: S3TokenizerConfig = field(default_factory=S3TokenizerConfig)
    campplus: CAMPPlusConfig = field(default_factory=CAMPPlusConfig)
    # --- what prepare_conditionals takes of the recording ------------------------------
    s3gen_sr: int = 24_000  # Hz: the file is loaded at this rate
    s3_sr: int = 16_000  # Hz: tokenizer, CAMPPlus and VoiceEncoder rate
    dec_cond_seconds: int = 10  # S3Gen prompt: first 10 s at 24 kHz (DEC_COND_LEN = 240,000)
    enc_cond_seconds: int = 6  # T3 prompt: first 6 s at 16 kHz (ENC_COND_LEN = 96,000)
    # --- our limits on the recording (the reference has none for this model; see docs/voices.md) --
    min_seconds: float = 1.0  # shorter clips carry too little voice (one padded VE partial, < 25 prompt tokens)
    min_exclusive: bool = False  # True: the clip must be *longer* than min_seconds (Turbo's `assert len > 5 s`)
    loudness_lufs: float | None = None  # gain the 24 kHz clip to this loudness first (Turbo: -27; None = off)
    t3_prompt_len: int = 150  # T3 prompt tokens at most (the base T3's speech_cond_prompt_len; Turbo 375)
    max_seconds: float = 60.0  # longer clips are cut here with a notice: only the speaker embedding reads past 10 s

    @property
    def dec_cond_len(self) -> int:
        return self.dec_cond_seconds * self.s3gen_sr

    @property
    def enc_cond_len(self) -> int:
        return self.enc_cond_seconds * self.s3_sr

    @classmethod
    def from_name(cls, name: str) -> "VoiceConfig":
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown voice preset {name!r}; known: {sorted(PRESETS)}") from None

    @classmethod
    def from_checkpoint_dir(cls, path: str | Path) -> "VoiceConfig":
        """A golden-format `config.json` (voice_encoder / s3gen.S3Tokenizer / voice_cloning sections) or chatterbox."""
        cfg_file = Path(path) / "config.json"
        data = json.loads(cfg_file.read_text()) if cfg_file.is_file() else None
        if not isinstance(data, dict):
            return CHATTERBOX
        return _from_reference_dict(data)


def _from_reference_dict(data: dict) -> VoiceConfig:
    base = CHATTERBOX
    ve = (data.get("voice_encoder") or {}).get("VoiceEncConfig", {})
    tok = ((data.get("s3gen") or {}).get("S3Tokenizer") or {}).get("ModelConfig", {})
    cam = (data.get("voice_cloning") or {}).get("CAMPPlus", {})
    blocks = cam.get("blocks")
    return replace(
        base,
        ve=replace(base.ve, hidden_size=ve.get("ve_hidden_size", base.ve.hidden_size),
                   embed_size=ve.get("speaker_embed_size", base.ve.embed_size),
                   n_mels=ve.get("num_mels", base.ve.n_mels),
                   partial_frames=ve.get("ve_partial_frames", base.ve.partial_frames)),
        tokenizer=replace(base.tokenizer, n_mels=tok.get("n_mels", base.tokenizer.n_mels),
                          width=tok.get("n_audio_state", base.tokenizer.width),
                          heads=tok.get("n_audio_head", base.tokenizer.heads),
                          layers=tok.get("n_audio_layer", base.tokenizer.layers)),
        campplus=replace(base.campplus, m_channels=cam.get("FCM_m_channels", base.campplus.m_channels),
                         growth_rate=cam.get("growth_rate", base.campplus.growth_rate),
                         bn_size=cam.get("bn_size", base.campplus.bn_size),
                         init_channels=cam.get("init_channels", base.campplus.init_channels),
                         embed_size=cam.get("embedding_size", base.campplus.embed_size),
                         block_layers=tuple(b["num_layers"] for b in blocks) if blocks else base.campplus.block_layers,
                         block_dilations=tuple(b["dilation"] for b in blocks) if blocks else base.campplus.block_dilations),
    )


# The released model (ve.safetensors; s3gen.safetensors tokenizer.* and speaker_encoder.*).
CHATTERBOX = VoiceConfig()

# The golden fixtures' scale (tests/data/golden_tiny/config.json).
TINY = replace(
    CHATTERBOX,
    ve=replace(CHATTERBOX.ve, hidden_size=32),
    tokenizer=replace(CHATTERBOX.tokenizer, width=64, heads=1, layers=2),
    campplus=replace(CHATTERBOX.campplus, m_channels=8, growth_rate=2, bn_size=3, init_channels=16),
)

# CPU-sized: the real widths (so per-layer costs carry over), a third of the tokenizer's depth.
# VoiceEncoder and CAMPPlus keep their real sizes (1.4 M and 7 M parameters: already small).
SMALL = replace(CHATTERBOX, tokenizer=replace(CHATTERBOX.tokenizer, layers=2))

# Chatterbox Turbo's prepare_conditionals: the same three models (ve.safetensors; tokenizer.* and
# speaker_encoder.* of s3gen_meanflow.safetensors), a 15 s T3 prompt of at most 375 tokens, a clip
# longer than 5 s, and the loudness gain to -27 LUFS (norm_loudness=True, the reference's default).
TURBO_OVERRIDES = dict(enc_cond_seconds=15, t3_prompt_len=375, min_seconds=5.0, min_exclusive=True, loudness_lufs=-27.0)
TURBO = replace(CHATTERBOX, **TURBO_OVERRIDES)

PRESETS: dict[str, VoiceConfig] = {"chatterbox": CHATTERBOX, "tiny": TINY, "small": SMALL, "turbo": TURBO,
                                   "turbo-small": replace(SMALL, **TURBO_OVERRIDES),
                                   "turbo-tiny": replace(TINY, **TURBO_OVERRIDES)}
