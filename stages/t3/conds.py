"""T3 conditionals (the voice): speaker embedding, speech prompt tokens, emotion scalar.

Loaded from the `t3` part of a reference `conds.pt`, or made up deterministically for the
built-in random-weight model.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.common.conds import load_conds_part
from stages.common.weights import CheckpointError
from stages.t3.config import T3Config

BUILTIN_CONDS_SEED = 20251125  # fixed so the built-in voice is the same on every machine
BUILTIN_EXAGGERATION = 0.5  # the reference's default exaggeration


@dataclass(frozen=True)
class T3Conditionals:
    speaker_emb: torch.Tensor  # [1, 256] float32, VoiceEncoder embedding
    cond_prompt_speech_tokens: torch.Tensor  # [1, P] int64, P <= prompt_len, ids < 6561
    emotion_adv: torch.Tensor  # [1, 1, 1] float32, the stored exaggeration (requests override it)

    def cache_key(self) -> str:
        """A digest of the voice's tensors (not of the stored exaggeration, which requests override):
        equal voices share a prefix-cache entry, changed tensors never reuse a stale one."""
        h = hashlib.blake2b(digest_size=16)
        for t in (self.speaker_emb, self.cond_prompt_speech_tokens):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{list(t.shape)}".encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def check(self, cfg: T3Config, source: str = "conditionals") -> "T3Conditionals":
        """Raise CheckpointError if the tensors do not fit `cfg`."""
        spk, tok = self.speaker_emb, self.cond_prompt_speech_tokens
        if tuple(spk.shape) != (1, cfg.speaker_embed_size) or not spk.is_floating_point():
            raise CheckpointError(f"{source}: speaker_emb must be a float [1, {cfg.speaker_embed_size}] tensor, "
                                  f"got {spk.dtype} {list(spk.shape)}")
        if tok.ndim != 2 or tok.shape[0] != 1 or not 1 <= tok.shape[1] <= cfg.speech_pos_rows \
                or tok.is_floating_point():
            raise CheckpointError(f"{source}: cond_prompt_speech_tokens must be an integer [1, P] tensor, "
                                  f"got {tok.dtype} {list(tok.shape)}")
        if int(tok.min()) < 0 or int(tok.max()) >= cfg.speech_vocab_size:
            raise CheckpointError(f"{source}: cond_prompt_speech_tokens has ids outside [0, {cfg.speech_vocab_size})")
        if not torch.isfinite(spk).all():
            raise CheckpointError(f"{source}: speaker_emb has non-finite values")
        return self


def load_t3_conditionals(path: str | Path, cfg: T3Config) -> T3Conditionals:
    """The `t3` part of a conds.pt file (Conditionals.save format); CheckpointError names the file."""
    part = load_conds_part(path, "t3", {
        "speaker_emb": (1, cfg.speaker_embed_size),
        "cond_prompt_speech_tokens": (1, None),
        "emotion_adv": (None, None, None),
    })
    conds = T3Conditionals(
        speaker_emb=part["speaker_emb"].float(),
        cond_prompt_speech_tokens=part["cond_prompt_speech_tokens"].long(),
        emotion_adv=part["emotion_adv"].float().reshape(-1)[:1].reshape(1, 1, 1),
    )
    return conds.check(cfg, str(path))


def builtin_t3_conditionals(cfg: T3Config) -> T3Conditionals:
    """A made-up, fixed voice for the built-in model: non-negative unit speaker_emb, random prompt codes."""
    g = torch.Generator().manual_seed(BUILTIN_CONDS_SEED)
    spk = torch.rand(1, cfg.speaker_embed_size, generator=g)
    spk = spk / spk.norm(dim=-1, keepdim=True)  # VoiceEncoder outputs are ReLU'd and L2-normalised
    tokens = torch.randint(0, cfg.num_speech_codes, (1, cfg.prompt_len), generator=g)
    emotion = torch.full((1, 1, 1), BUILTIN_EXAGGERATION)
    return T3Conditionals(spk, tokens, emotion)
