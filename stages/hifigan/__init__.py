"""HiFiGAN stage: the HiFT vocoder (log-mel at 50 Hz -> 24 kHz audio), the 24 kHz mel extractor and trim fade."""
from .checkpoint import build_builtin_hift, hift_schema, load_hift
from .config import PRESETS, HiFTConfig
from .fade import N_TRIM, apply_trim_fade, trim_fade
from .generator import HiFT
from .mel import mel_spectrogram
from .receptive import DecodeReceptiveField, decode_receptive_field

__all__ = [
    "HiFT", "HiFTConfig", "PRESETS", "build_builtin_hift", "hift_schema", "load_hift", "mel_spectrogram",
    "trim_fade", "apply_trim_fade", "N_TRIM", "DecodeReceptiveField", "decode_receptive_field",
]
