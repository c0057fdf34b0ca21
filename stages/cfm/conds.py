"""The flow's voice conditioning (`conds.pt` gen part): prompt tokens, prompt mel and x-vector."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.cfm.config import CFMConfig
from stages.common.conds import load_conds_part
from stages.common.weights import CheckpointError

log = logging.getLogger(__name__)

BUILTIN_PROMPT_TOKENS = 20  # 0.8 s of made-up prompt for the built-in random model
BUILTIN_SEED = 20261125  # fixed generator seed of the built-in prompt (any constant; never change it silently)
BUILTIN_MEL_RANGE = (-5.0, 0.0)  # plausible natural-log mel range of speech (silence ~ -11.5 = ln 1e-5)


@dataclass(frozen=True)
class FlowConditionals:
    prompt_token: torch.Tensor  # [1, P] int64, < vocab_size
    prompt_feat: torch.Tensor  # [1, 2P, n_mels] float32 natural-log mel (frames x mels, as stored)
    embedding: torch.Tensor  # [1, spk_embed_dim] float32 raw x-vector (normalised inside the flow)

    @property
    def n_prompt_tokens(self) -> int:
        return self.prompt_token.size(1)

    @property
    def n_prompt_frames(self) -> int:
        return self.prompt_feat.size(1)

    def to(self, device: torch.device | str) -> "FlowConditionals":
        return FlowConditionals(self.prompt_token.to(device), self.prompt_feat.to(device), self.embedding.to(device))


def load_flow_conditionals(path: str | Path, cfg: CFMConfig | None = None) -> FlowConditionals:
    """Read the `gen` part of a conds.pt (Conditionals.save format) and check it against `cfg`.

    Like the reference's embed_ref, a prompt whose mel is not exactly 2 frames per token is
    aligned by truncating the tokens to frames // 2; the mel is then cut to 2 x tokens so the
    prompt/generated boundary always falls on a token boundary. Raises CheckpointError.
    """
    cfg = cfg or CFMConfig()
    gen = load_conds_part(
        path,
        "gen",
        {"prompt_token": (1, None), "prompt_feat": (1, None, cfg.n_mels), "embedding": (1, cfg.spk_embed_dim)},
    )
    tokens, feat, emb = gen["prompt_token"], gen["prompt_feat"], gen["embedding"]
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise CheckpointError(f"{path}: gen.prompt_token has dtype {tokens.dtype}, expected an integer type")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
        raise CheckpointError(f"{path}: gen.prompt_token has ids outside [0, {cfg.vocab_size})")
    if not feat.is_floating_point() or not emb.is_floating_point():
        raise CheckpointError(f"{path}: gen.prompt_feat and gen.embedding must be floating point")
    if not bool(torch.isfinite(feat).all()) or not bool(torch.isfinite(emb).all()):
        raise CheckpointError(f"{path}: gen.prompt_feat or gen.embedding holds NaN/inf")
    n_tok = min(tokens.size(1), feat.size(1) // cfg.token_mel_ratio)
    if n_tok * cfg.token_mel_ratio != feat.size(1) or n_tok != tokens.size(1):
        log.warning("%s: %d prompt tokens vs %d prompt frames; using %d tokens", path, tokens.size(1), feat.size(1), n_tok)
    return FlowConditionals(
        prompt_token=tokens[:, :n_tok].long().contiguous(),
        prompt_feat=feat[:, : n_tok * cfg.token_mel_ratio].float().contiguous(),
        embedding=emb.float().contiguous(),
    )


def builtin_flow_conditionals(cfg: CFMConfig, n_tokens: int = BUILTIN_PROMPT_TOKENS) -> FlowConditionals:
    """A deterministic made-up voice of `n_tokens` prompt tokens for the built-in random-weight models."""
    g = torch.Generator().manual_seed(BUILTIN_SEED)
    n_frames = n_tokens * cfg.token_mel_ratio
    tokens = torch.randint(0, cfg.vocab_size, (1, n_tokens), generator=g)  # [1, P]
    lo, hi = BUILTIN_MEL_RANGE
    # smooth spectral envelope falling towards high bins, plus small per-frame jitter
    tilt = torch.linspace(hi - 0.5, lo + 0.5, cfg.n_mels)  # [n_mels]
    jitter = 0.5 * torch.randn(n_frames, cfg.n_mels, generator=g)  # [2P, n_mels]
    feat = (tilt.unsqueeze(0) + jitter).clamp(lo, hi).unsqueeze(0)  # [1, 2P, n_mels]
    emb = torch.randn(1, cfg.spk_embed_dim, generator=g)  # [1, spk_embed_dim]
    return FlowConditionals(prompt_token=tokens, prompt_feat=feat, embedding=emb)
