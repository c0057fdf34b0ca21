"""Chatterbox Turbo: each stage's part of the model (checkpoint or built-in) and the offline generate path.

Each stage's loader lives in its own package (the pipeline's stage processes call them by
`ModelSpec.kind`): T3 stages/t3/turbo_part.py (t3_turbo_v1.safetensors, the GPT-2 tokenizer
files, conds.pt "t3"), CFM stages/cfm/part.py `load_meanflow_part` (s3gen_meanflow.safetensors
flow.*, conds.pt "gen"), HiFiGAN stages/hifigan/part.py `load_turbo_hift` (mel2wav.*).
`TurboEngine` runs the whole reference pipeline in one process, not streamed: text -> punc_norm ->
tokens -> T3 -> tokens < 6561 + 3 silence tokens -> meanflow flow (2 steps) -> HiFT -> trim fade;
(n + 3) * 960 samples for n valid tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from stages.cfm.part import CFMPart, cfm_noise
from stages.common.layout import TURBO, detect_model
from stages.common.spec import DTYPES, ModelSpec
from stages.hifigan.part import vocoder_generator
from stages.common.weights import read_checkpoint, schema_from_module

TURBO_PRESETS = ("turbo", "turbo-small", "turbo-tiny")
VE_FILE, CONDS_FILE = "ve.safetensors", "conds.pt"
# VoiceEncoder (ve.safetensors, the same network as the base model's): 40-mel LSTM -> 256-d embedding.
VE_MELS, VE_LAYERS, VE_EMBED, VE_HIDDEN = 40, 3, 256, 256


def _check_preset(spec: ModelSpec) -> str:
    if spec.builtin and spec.preset not in TURBO_PRESETS:
        raise ValueError(f"unknown Turbo preset {spec.preset!r}; choose one of {', '.join(TURBO_PRESETS)}")
    return spec.preset


def _golden_config(directory: Path) -> dict:
    """A Turbo folder's golden-format config.json (test checkpoints), or {} for a released folder."""
    path = directory / "config.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    return data if isinstance(data, dict) else {}


# --- VoiceEncoder file check (the voice-cloning stage owns the model) ------------------------------
class _VoiceEncoderKeys(nn.Module):
    """Only the key layout of ve.safetensors, for a strict check of the file; never run."""

    def __init__(self, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(VE_MELS, hidden, num_layers=VE_LAYERS, batch_first=True)
        self.proj = nn.Linear(hidden, VE_EMBED)
        self.similarity_weight = nn.Parameter(torch.ones(1))
        self.similarity_bias = nn.Parameter(torch.zeros(1))


def voice_encoder_schema(hidden: int = VE_HIDDEN):
    with torch.device("meta"):
        return schema_from_module(_VoiceEncoderKeys(hidden))


def check_voice_encoder_file(directory: str | Path) -> None:
    """Strictly check ve.safetensors's keys and shapes (CheckpointError names the file and keys)."""
    d = Path(directory)
    hidden = _golden_config(d).get("VoiceEncoder", {}).get("VoiceEncConfig", {}).get("ve_hidden_size", VE_HIDDEN)
    read_checkpoint(d / VE_FILE, voice_encoder_schema(int(hidden)))


# --- the parts (each stage's own loader; the offline T3 keeps the solo session of turbo_generate) ---------
@dataclass
class TurboT3Part:
    generator: object  # stages.t3.turbo_generate.TurboT3Generator
    tokenizer: object  # stages.t3.turbo_text.TurboTokenizer
    conds: object  # stages.t3.turbo_conds.TurboT3Conditionals


def load_turbo_t3_part(spec: ModelSpec, max_slots: int = 4) -> TurboT3Part:
    """The offline path's T3: the solo `TurboT3Generator` (the T3 stage serves Turbo on the batched tick,
    stages/t3/turbo_part.py; both read the same files through `load_turbo_model`)."""
    from stages.t3.turbo_generate import TurboT3Generator
    from stages.t3.turbo_part import load_turbo_model

    _check_preset(spec)
    model, cfg, tok, conds = load_turbo_model(spec)
    gen = TurboT3Generator(model, cfg, max_slots=max_slots, device=spec.device, dtype=DTYPES[spec.dtype])
    return TurboT3Part(gen, tok, conds)


def load_turbo_cfm_part(spec: ModelSpec) -> CFMPart:
    from stages.cfm.part import load_meanflow_part

    _check_preset(spec)
    return load_meanflow_part(spec)


def load_turbo_hifigan_part(spec: ModelSpec):
    """-> stages.hifigan.generator.HiFT from mel2wav.* of s3gen_meanflow.safetensors (float32 always)."""
    from stages.hifigan.part import load_turbo_hift

    _check_preset(spec)
    return load_turbo_hift(spec).to(spec.device).eval()


def check_turbo_checkpoint(directory: str | Path) -> None:
    """Everything a Turbo folder must pass before any stage starts: its files, then ve.safetensors."""
    detect_model(directory, TURBO)
    check_voice_encoder_file(directory)


# --- the offline (non-streaming) path -------------------------------------------------------------------
class TurboEngine:
    """All three Turbo parts in this process: the reference's `generate`, whole-utterance."""

    def __init__(self, spec: ModelSpec, max_slots: int = 2):
        if not spec.builtin:
            check_turbo_checkpoint(spec.checkpoint)
        self.spec = spec
        self.t3 = load_turbo_t3_part(spec, max_slots)
        self.cfm = load_turbo_cfm_part(spec)
        self.hift = load_turbo_hifigan_part(spec)

    def text_ids(self, text: str) -> list[int]:
        from stages.t3.turbo_text import encode_turbo_text

        return encode_turbo_text(text, self.t3.tokenizer, self.t3.generator.cfg)

    def tokens(self, text: str, params=None, choose: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[int]:
        """T3 alone: the valid speech tokens (< 6561) for `text`. `choose(probs) -> [1] long` replaces
        the sampler's own draw at every step (tests inject the reference's)."""
        session = self.t3.generator.start(self.text_ids(text), self.t3.conds, params)
        out: list[int] = []
        try:
            while not session.finished:
                tok = session.step(choose)
                if tok is not None:
                    out.append(tok)
        finally:
            session.close()
        return out

    @torch.no_grad()
    def mel(self, tokens: Sequence[int], noise, n_timesteps: int | None = None) -> torch.Tensor:
        """Valid tokens (+ the 3 silence tokens) -> mel [1, 80, 2(n + 3)]. `noise` is a NoiseSource or a
        [1, 80, 2(P + n + 3)] tensor over the prompt + generated frames."""
        from stages.cfm.meanflow import with_trailing_silence

        valid = [int(t) for t in tokens if 0 <= int(t) < self.cfm.flow.cfg.vocab_size]
        speech = with_trailing_silence(torch.tensor([valid], dtype=torch.long))  # [1, n + 3]
        return self.cfm.flow.infer(speech, self.cfm.conds, noise, n_timesteps=n_timesteps)

    @torch.no_grad()
    def vocode(self, mel: torch.Tensor, randomness: torch.Generator | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """mel -> trim-faded wav [480 x frames]; randomness: a generator, or (start_phase, noise) tensors."""
        from stages.hifigan.fade import apply_trim_fade

        if isinstance(randomness, torch.Generator):
            wav, _ = self.hift.inference(mel.float(), randomness)
        else:
            wav, _ = self.hift.inference_given(mel.float(), *randomness)
        return apply_trim_fade(wav[0]).cpu()

    def synthesize(self, tokens: Sequence[int], seed: int, n_timesteps: int | None = None) -> torch.Tensor:
        """Tokens -> waveform [960 (n + 3)] with the request's noise and vocoder draws (as streaming uses)."""
        return self.vocode(self.mel(tokens, cfm_noise(seed), n_timesteps), vocoder_generator(self.hift, seed))

    def generate(self, text: str, params=None) -> torch.Tensor:
        """text -> waveform, the reference's ChatterboxTurboTTS.generate with the engine's randomness."""
        from stages.t3.turbo_sampling import TurboSamplingParams

        params = params or TurboSamplingParams()
        params = replace(params, seed=params.resolved_seed())
        return self.synthesize(self.tokens(text, params), params.seed)
