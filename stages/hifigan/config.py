"""HiFT vocoder configuration: one frozen dataclass and its named presets.

Used by the HiFiGAN stage (model construction, checkpoint schema, receptive field).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from math import prod
from pathlib import Path

SAMPLE_RATE = 24_000  # Hz, the output rate of every Chatterbox preset
MEL_BINS = 80  # log-mel channels produced by the CFM stage
MEL_FRAME_RATE = 50  # mel frames per second (hop 480 at 24 kHz)


@dataclass(frozen=True)
class HiFTConfig:
    """Hyperparameters of HiFTGenerator + ConvRNNF0Predictor (reference argument names in comments)."""

    sampling_rate: int = SAMPLE_RATE
    in_channels: int = MEL_BINS
    base_channels: int = 512  # conv_pre output width; halved at every upsampling stage
    upsample_rates: tuple[int, ...] = (8, 5, 3)  # 8*5*3 = 120 frames of iSTFT per mel frame
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    istft_n_fft: int = 16  # istft_params["n_fft"]: 9 frequency bins
    istft_hop: int = 4  # istft_params["hop_len"]: 120 * 4 = 480 samples per mel frame
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)  # three parallel Snake ResBlocks per stage
    resblock_dilations: tuple[int, ...] = (1, 3, 5)  # same dilations in every ResBlock
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)  # one per upsampling stage
    nb_harmonics: int = 8  # overtones above f0, so 9 sines in all
    nsf_alpha: float = 0.1  # sine amplitude (and 3x the unvoiced noise std)
    nsf_sigma: float = 0.003  # noise std in voiced samples
    nsf_voiced_threshold: float = 10.0  # Hz; f0 above this is voiced
    lrelu_slope: float = 0.1  # leaky ReLU before each ConvTranspose
    post_lrelu_slope: float = 0.01  # F.leaky_relu default used before conv_post
    audio_limit: float = 0.99  # final clamp
    magnitude_limit: float = 100.0  # clip of exp(log-magnitude) before the iSTFT
    f0_cond_channels: int = 512  # ConvRNNF0Predictor cond_channels
    f0_num_convs: int = 5  # condnet depth (conv k=3 + ELU each)

    def __post_init__(self) -> None:
        n = len(self.upsample_rates)
        if len(self.upsample_kernel_sizes) != n or len(self.source_resblock_kernel_sizes) != n:
            raise ValueError("upsample_rates, upsample_kernel_sizes and source_resblock_kernel_sizes need equal lengths")
        if self.base_channels % (2**n):
            raise ValueError(f"base_channels {self.base_channels} must be divisible by 2**{n}")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if (k - u) % 2:
                raise ValueError(f"upsample kernel {k} - rate {u} must be even so the length is exactly x{u}")

    # --- derived sizes -------------------------------------------------------------
    @property
    def n_harmonics_total(self) -> int:
        return self.nb_harmonics + 1  # fundamental + overtones

    @property
    def n_bins(self) -> int:
        return self.istft_n_fft // 2 + 1  # one-sided STFT bins

    @property
    def hop_samples(self) -> int:
        """Output samples per mel frame (480 for every preset)."""
        return prod(self.upsample_rates) * self.istft_hop

    # --- presets and loading -------------------------------------------------------
    @classmethod
    def from_name(cls, name: str) -> "HiFTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown HiFT preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]

    @classmethod
    def from_reference_dict(cls, hift: dict, f0: dict | None = None) -> "HiFTConfig":
        """From the reference's HiFTGenerator kwargs (+ ConvRNNF0Predictor kwargs), as in golden config.json."""
        dil = {tuple(d) for d in hift.get("resblock_dilation_sizes", [[1, 3, 5]])}
        dil |= {tuple(d) for d in hift.get("source_resblock_dilation_sizes", [[1, 3, 5]])}
        if len(dil) != 1:
            raise ValueError(f"per-block dilations differ ({sorted(dil)}); this implementation shares one list")
        ist = hift.get("istft_params", {"n_fft": 16, "hop_len": 4})
        base = cls()
        return replace(
            base,
            sampling_rate=int(hift.get("sampling_rate", base.sampling_rate)),
            in_channels=int(hift.get("in_channels", base.in_channels)),
            base_channels=int(hift.get("base_channels", base.base_channels)),
            upsample_rates=tuple(hift.get("upsample_rates", base.upsample_rates)),
            upsample_kernel_sizes=tuple(hift.get("upsample_kernel_sizes", base.upsample_kernel_sizes)),
            istft_n_fft=int(ist["n_fft"]),
            istft_hop=int(ist["hop_len"]),
            resblock_kernel_sizes=tuple(hift.get("resblock_kernel_sizes", base.resblock_kernel_sizes)),
            resblock_dilations=next(iter(dil)),
            source_resblock_kernel_sizes=tuple(hift.get("source_resblock_kernel_sizes", base.source_resblock_kernel_sizes)),
            nb_harmonics=int(hift.get("nb_harmonics", base.nb_harmonics)),
            nsf_alpha=float(hift.get("nsf_alpha", base.nsf_alpha)),
            nsf_sigma=float(hift.get("nsf_sigma", base.nsf_sigma)),
            nsf_voiced_threshold=float(hift.get("nsf_voiced_threshold", base.nsf_voiced_threshold)),
            lrelu_slope=float(hift.get("lrelu_slope", base.lrelu_slope)),
            audio_limit=float(hift.get("audio_limit", base.audio_limit)),
            f0_cond_channels=int((f0 or {}).get("cond_channels", base.f0_cond_channels)),
        )

    @classmethod
    def from_checkpoint_dir(cls, directory: str | Path) -> "HiFTConfig":
        """The golden-format `config.json` (s3gen.HiFTGenerator) if the folder has one, else `chatterbox`."""
        path = Path(directory) / "config.json"
        if path.is_file():
            s3gen = json.loads(path.read_text()).get("s3gen", {})
            if "HiFTGenerator" in s3gen:
                return cls.from_reference_dict(s3gen["HiFTGenerator"], s3gen.get("ConvRNNF0Predictor"))
        return CHATTERBOX

    # --- receptive field (see receptive.py for the derivation) ------------------------
    def decode_context_frames(self) -> tuple[int, int]:
        """(left, right) mel frames that `decode` output in one frame depends on beyond that frame."""
        from .receptive import decode_receptive_field

        rf = decode_receptive_field(self)
        return rf.mel_left_frames, rf.mel_right_frames

    def decode_context_source_samples(self) -> tuple[int, int]:
        """(left, right) source samples that one `decode` output sample depends on."""
        from .receptive import decode_receptive_field

        rf = decode_receptive_field(self)
        return rf.source_left_samples, rf.source_right_samples

    def decode_window_context_frames(self) -> tuple[int, int]:
        """(left, right) frames a decode window (mel and source over the same frames) needs around the
        frames it keeps so they equal whole-utterance decode: the wider of the mel and source reaches."""
        from .receptive import decode_receptive_field

        rf = decode_receptive_field(self)
        return rf.window_left_frames, rf.window_right_frames

    def f0_context_frames(self) -> int:
        """Mel frames either side that one predicted f0 frame depends on (k=3 convs, pad 1)."""
        return self.f0_num_convs  # each k=3 conv reaches one frame further on each side


CHATTERBOX = HiFTConfig()  # the released model (mel2wav.* of s3gen.safetensors), ~20.8 M params
TINY = replace(CHATTERBOX, base_channels=16, f0_cond_channels=32)  # the golden fixtures' sizes (52 k params)
# CPU-sized: the same structure at a quarter of the width (about 1/16 of the conv FLOPs); random weights only.
SMALL = replace(CHATTERBOX, base_channels=128, f0_cond_channels=128)

PRESETS: dict[str, HiFTConfig] = {"chatterbox": CHATTERBOX, "tiny": TINY, "small": SMALL}
