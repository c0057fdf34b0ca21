"""Turbo T3 conditionals (the voice): speaker embedding and the raw speech prompt tokens.

Loaded from the `t3` part of a Turbo `conds.pt` (375 prompt tokens, 15 s), or made up
deterministically for the built-in random-weight models. Turbo ignores `emotion_adv`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.common.conds import load_conds_part
from stages.common.weights import CheckpointError
from stages.t3.turbo_config import TurboT3Config

BUILTIN_CONDS_SEED = 20261201  # fixed so the built-in Turbo voice is the same on every machine


@dataclass(frozen=True)
class TurboT3Conditionals:
    speaker_emb: torch.Tensor  # [1, 256] float32, VoiceEncoder embedding
    cond_prompt_speech_tokens: torch.Tensor  # [1, P] int64, ids < 6561 (P = 375 for the released voice)

    def cache_key(self) -> str:
        """A digest of the voice's tensors (the tick's prefix-cache key, as for the base model's voices)."""
        h = hashlib.blake2b(digest_size=16, person=b"turbo-t3")
        for t in (self.speaker_emb, self.cond_prompt_speech_tokens):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{list(t.shape)}".encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    @property
    def n_prompt(self) -> int:
        return self.cond_prompt_speech_tokens.shape[1]

    def check(self, cfg: TurboT3Config, source: str = "conditionals") -> "TurboT3Conditionals":
        """Raise CheckpointError if the tensors do not fit `cfg`."""
        spk, tok = self.speaker_emb, self.cond_prompt_speech_tokens
        if tuple(spk.shape) != (1, cfg.speaker_embed_size) or not spk.is_floating_point():
            raise CheckpointError(f"{source}: speaker_emb must be a float [1, {cfg.speaker_embed_size}] tensor, "
                                  f"got {spk.dtype} {list(spk.shape)}")
        if tok.ndim != 2 or tok.shape[0] != 1 or tok.shape[1] < 1 or tok.is_floating_point() or tok.dtype == torch.bool:
            raise CheckpointError(f"{source}: cond_prompt_speech_tokens must be an integer [1, P] tensor, "
                                  f"got {tok.dtype} {list(tok.shape)}")
        if int(tok.min()) < 0 or int(tok.max()) >= cfg.num_speech_codes:
            raise CheckpointError(f"{source}: cond_prompt_speech_tokens has ids outside [0, {cfg.num_speech_codes})")
        if not torch.isfinite(spk).all():
            raise CheckpointError(f"{source}: speaker_emb has non-finite values")
        return self

    def to(self, device) -> "TurboT3Conditionals":
        return TurboT3Conditionals(self.speaker_emb.to(device), self.cond_prompt_speech_tokens.to(device))


def load_turbo_t3_conditionals(path: str | Path, cfg: TurboT3Config) -> TurboT3Conditionals:
    """The `t3` part of a Turbo conds.pt (Conditionals.save format); CheckpointError names the file."""
    part = load_conds_part(path, "t3", {
        "speaker_emb": (1, cfg.speaker_embed_size),
        "cond_prompt_speech_tokens": (1, None),
    })
    conds = TurboT3Conditionals(part["speaker_emb"].float(), part["cond_prompt_speech_tokens"])
    conds.check(cfg, str(path))
    return TurboT3Conditionals(conds.speaker_emb, conds.cond_prompt_speech_tokens.long())


def builtin_turbo_t3_conditionals(cfg: TurboT3Config) -> TurboT3Conditionals:
    """A made-up, fixed voice: non-negative unit speaker_emb, `prompt_len` random prompt codes."""
    g = torch.Generator().manual_seed(BUILTIN_CONDS_SEED)
    spk = torch.rand(1, cfg.speaker_embed_size, generator=g)
    spk = spk / spk.norm(dim=-1, keepdim=True)  # VoiceEncoder outputs are ReLU'd and L2-normalised
    tokens = torch.randint(0, cfg.num_speech_codes, (1, cfg.prompt_len), generator=g)
    return TurboT3Conditionals(spk, tokens)
