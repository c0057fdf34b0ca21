"""Chatterbox Turbo's meanflow S3Gen flow: the base flow with a time mixer, solved in 2 plain Euler steps.

Identical to the base flow (stages/cfm/flow.py) except:
- the estimator embeds the step's start time t *and* end time r with the same sinusoid and
  `time_mlp`, and mixes them: t_emb = time_embed_mixer(cat[t_emb, r_emb]) (Linear 2T -> T, no bias);
- the solver is a basic Euler on linspace(0, 1, n + 1) (no cosine warp) with no CFG batch:
  x <- x + (r - t) * v(x, t, r); Turbo runs n = 2, i.e. (t, r) = (0, 0.5), (0.5, 1).
Turbo's `generate` appends 3 silence tokens (4299) to the T3 tokens and vocodes them too, so
n T3 tokens give (n + 3) * 960 samples (`with_trailing_silence`).

Weights: `flow.*` of s3gen_meanflow.safetensors (the base file's keys + the mixer), loaded strictly.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from stages.cfm.config import CHATTERBOX, SMALL, TINY, CFMConfig, _from_reference_dict
from stages.cfm.estimator import ConditionalDecoder, timestep_embedding
from stages.cfm.flow import Flow
from stages.common.weights import CheckpointError, Schema, random_checkpoint, read_checkpoint, schema_from_module, strip_prefix

S3GEN_MEANFLOW_FILE = "s3gen_meanflow.safetensors"
PREFIX = "flow."  # the flow's keys in s3gen_meanflow.safetensors
OTHER_PARTS = ("mel2wav.", "tokenizer.", "speaker_encoder.")  # vocoder (HiFiGAN stage), S3 tokenizer / CAMPPlus (voice)
MIXER_KEY = "flow.decoder.estimator.time_embed_mixer.weight"
MEANFLOW_STEPS = 2  # Turbo's n_cfm_timesteps (the decoder is distilled for 2 steps)
SILENCE_TOKEN = 4299  # S3GEN_SIL: a speech token that decodes to silence
N_SILENCE_TOKENS = 3  # appended after the T3 tokens by ChatterboxTurboTTS.generate (vocoded, never trimmed)


class MeanflowDecoder(ConditionalDecoder):
    """`flow.decoder.estimator` of the meanflow checkpoint: the base U-Net + `time_embed_mixer`."""

    def __init__(self, cfg: CFMConfig):
        super().__init__(cfg)
        d = cfg.time_embed_dim
        self.time_embed_mixer = nn.Linear(2 * d, d, bias=False)

    def embed_time(self, t: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        """t, r [B] -> mixer(cat[time_mlp(sin(t)), time_mlp(sin(r))])  [B, time_embed_dim]."""
        if r is None:
            raise ValueError("the meanflow estimator needs the step's end time r")
        t_emb = self.time_mlp(timestep_embedding(t, self.in_channels))  # [B, T]
        r_emb = self.time_mlp(timestep_embedding(r, self.in_channels))  # [B, T]
        return self.time_embed_mixer(torch.cat([t_emb, r_emb], dim=1))  # [B, T]


def linear_time_grid(n_timesteps: int, dtype: torch.dtype = torch.float32, device="cpu") -> torch.Tensor:
    """t_k = k / n, k = 0..n (no cosine warp).  [n+1]"""
    return torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)


def solve_meanflow(estimator: nn.Module, noise: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor,
                   cond: torch.Tensor, mask: torch.Tensor, n_timesteps: int) -> torch.Tensor:
    """Basic Euler from x = noise at t = 0 to t = 1: x <- x + (r - t) v(x, mask, mu, t, spks, cond, r).

    noise/mu/cond [B, 80, F], spks [B, 80], mask [B, 1, F]; one estimator call per step on batch B
    (no CFG rows). Returns x at t = 1.  # [B, 80, F]
    """
    if n_timesteps < 1:
        raise ValueError(f"n_timesteps must be >= 1, got {n_timesteps}")
    grid = linear_time_grid(n_timesteps, noise.dtype, noise.device)
    b = noise.size(0)
    x = noise
    for k in range(n_timesteps):
        t, r = grid[k : k + 1], grid[k + 1 : k + 2]  # [1] each
        v = estimator(x, mask, mu, t.expand(b), spks, cond, r.expand(b))  # [B, 80, F]
        x = x + (r - t) * v
    return x


class MeanflowFlow(Flow):
    """The Turbo flow: `Flow`'s encoder, speaker projection, prompt handling and streaming API, with the
    meanflow estimator and solver. `solve(..., cfg_rate)` ignores cfg_rate (the model is distilled
    without guidance); `n_timesteps` defaults to the config's (2 for the Turbo presets)."""

    def __init__(self, cfg: CFMConfig):
        super().__init__(cfg)
        self.decoder.estimator = MeanflowDecoder(cfg)

    def _integrate(self, noise, mu, spks, cond, mask, n_timesteps: int, cfg_rate: float) -> torch.Tensor:
        return solve_meanflow(self.estimator, noise, mu, spks, cond, mask, n_timesteps)

    # the same steps one at a time, for the CFM stage's running batch (stages/cfm/batch.py)
    def time_grid(self, n_timesteps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return linear_time_grid(n_timesteps, dtype, device)

    def step_inputs(self, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> tuple:
        return (mask, mu, spks, cond)  # no CFG rows

    @torch.no_grad()
    def step(self, x: torch.Tensor, inputs: tuple, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        mask, mu, spks, cond = inputs
        v = self.estimator(x, mask, mu, t, spks, cond, t_next)  # [B, 80, L]
        return x + (t_next - t).view(-1, 1, 1) * v


def with_trailing_silence(speech_tokens: torch.Tensor) -> torch.Tensor:
    """[1, N] T3 tokens -> [1, N + 3]: the 3 silence tokens Turbo vocodes after every utterance."""
    tail = torch.full((speech_tokens.size(0), N_SILENCE_TOKENS), SILENCE_TOKEN, dtype=speech_tokens.dtype,
                      device=speech_tokens.device)
    return torch.cat([speech_tokens, tail], dim=1)


# --- presets: the base sizes with Turbo's 2 steps ------------------------------------------------
MEANFLOW_PRESETS: dict[str, CFMConfig] = {
    "turbo": replace(CHATTERBOX, n_timesteps=MEANFLOW_STEPS),  # the released s3gen_meanflow.safetensors
    "turbo-small": replace(SMALL, n_timesteps=MEANFLOW_STEPS),  # real widths, fewer layers (CPU benchmarks)
    "turbo-tiny": replace(TINY, n_timesteps=MEANFLOW_STEPS),  # the golden turbo-tiny sizes
}


def meanflow_config(name: str) -> CFMConfig:
    try:
        return MEANFLOW_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown meanflow preset {name!r}; choose one of {sorted(MEANFLOW_PRESETS)}") from None


def meanflow_config_from_checkpoint_dir(directory: str | Path) -> CFMConfig:
    """A Turbo folder's golden-format config.json (`S3Gen.scaling`) if present, else `turbo`."""
    path = Path(directory) / "config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        s3 = data.get("S3Gen") if isinstance(data, dict) else None
        if isinstance(s3, dict) and isinstance(s3.get("scaling"), dict):
            return replace(_from_reference_dict(s3["scaling"]), n_timesteps=int(s3.get("n_cfm_timesteps_generate", MEANFLOW_STEPS)))
    return MEANFLOW_PRESETS["turbo"]


# --- weights ---------------------------------------------------------------------------------------
def meanflow_flow_schema(cfg: CFMConfig) -> Schema:
    """Checkpoint key (with the `flow.` prefix) -> shape and init branch, for every meanflow flow tensor."""
    with torch.device("meta"):
        return schema_from_module(MeanflowFlow(cfg), PREFIX)


def _flow_from_tensors(cfg: CFMConfig, tensors: dict[str, torch.Tensor]) -> MeanflowFlow:
    with torch.device("meta"):
        flow = MeanflowFlow(cfg)
    flow.load_state_dict(strip_prefix(tensors, PREFIX), strict=True, assign=True)
    return flow.requires_grad_(False).eval()


def load_meanflow_flow(path: str | Path, cfg: CFMConfig) -> MeanflowFlow:
    """The flow of an s3gen_meanflow.safetensors, loaded unchanged and strictly.

    `mel2wav.*` (the vocoder) and `tokenizer.*` / `speaker_encoder.*` (voice cloning) are other
    owners' parts and skipped here; any other key, a missing `flow.*` key or a wrong shape raises
    CheckpointError naming the file and keys.
    """
    try:
        tensors = read_checkpoint(path, meanflow_flow_schema(cfg), ignore_prefixes=OTHER_PARTS)
    except CheckpointError as e:
        if "(1 problem(s))" in str(e) and f"missing key {MIXER_KEY}" in str(e):  # only the mixer is missing
            raise CheckpointError(f"{e}\n  (this is a base-model s3gen.safetensors, not Turbo's meanflow decoder)") from None
        raise
    return _flow_from_tensors(cfg, tensors)


def builtin_meanflow_checkpoint(cfg: CFMConfig) -> dict[str, torch.Tensor]:
    """The flow's tensors by the golden recipe (checkpoint keys); for `turbo-tiny` the golden `flow.*`."""
    return random_checkpoint(meanflow_flow_schema(cfg))


def build_builtin_meanflow_flow(cfg: CFMConfig) -> MeanflowFlow:
    """The built-in random-weight meanflow flow (golden recipe)."""
    return _flow_from_tensors(cfg, builtin_meanflow_checkpoint(cfg))
