"""The CFM stage's part of the model (s3gen.safetensors `flow.*`, the `gen` half of conds.pt) and a request's CFM stream.

`new_cfm_stream` is the one place a request's CFM state is built: the CFM stage process and
the single-process path both call it, so the same seed gives the same noise everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages.cfm.checkpoint import build_builtin_flow, load_flow
from stages.cfm.conds import FlowConditionals, builtin_flow_conditionals, load_flow_conditionals
from stages.cfm.config import CFMConfig
from stages.cfm.flow import Flow
from stages.cfm.noise import NoiseSource
from stages.cfm.streaming import CFMStream
from stages.common.layout import CHATTERBOX, TURBO, TURBO_PRESETS, detect_model
from stages.common.params import RequestParams
from stages.common.seeds import derive_seed
from stages.common.spec import CONDS_FILE, S3GEN_FILE, ModelSpec

BUILTIN_TURBO_PROMPT_TOKENS = 250  # the released Turbo voice's decoder prompt (10 s, 500 mel frames)


@dataclass
class CFMPart:
    flow: Flow
    conds: FlowConditionals  # the default voice
    model: str = CHATTERBOX  # the family (stages/common/layout.py): which request parameters apply
    tail_tokens: tuple[int, ...] = ()  # appended after T3's tokens and decoded too (Turbo: 3 x 4299)


def load_cfm_part(spec: ModelSpec) -> CFMPart:
    """The spec's flow (the base CFM, or Turbo's meanflow decoder by `spec.kind`) and its default voice."""
    if spec.turbo:
        return load_meanflow_part(spec)
    if spec.builtin:
        cfg = CFMConfig.from_name(spec.preset)
        flow, conds = build_builtin_flow(cfg), builtin_flow_conditionals(cfg)
    else:
        d = Path(spec.checkpoint)
        cfg = CFMConfig.from_checkpoint_dir(d)
        flow, conds = load_flow(d / S3GEN_FILE, cfg), load_flow_conditionals(d / CONDS_FILE, cfg)
    flow = flow.to(spec.device, spec.torch_dtype).eval()
    return CFMPart(flow, conds.to(spec.device))


def load_meanflow_part(spec: ModelSpec) -> CFMPart:
    """Turbo: `flow.*` of s3gen_meanflow.safetensors (strict) and the `gen` half of its conds.pt, or the built-in."""
    from stages.cfm.meanflow import (N_SILENCE_TOKENS, S3GEN_MEANFLOW_FILE, SILENCE_TOKEN, build_builtin_meanflow_flow,
                                     load_meanflow_flow, meanflow_config, meanflow_config_from_checkpoint_dir)

    if spec.builtin:
        if spec.preset not in TURBO_PRESETS:
            raise ValueError(f"unknown Turbo preset {spec.preset!r}; choose one of {', '.join(sorted(TURBO_PRESETS))}")
        cfg = meanflow_config(spec.preset)
        flow, conds = build_builtin_meanflow_flow(cfg), builtin_flow_conditionals(cfg, BUILTIN_TURBO_PROMPT_TOKENS)
    else:
        d = Path(spec.checkpoint)
        detect_model(d, TURBO)
        cfg = meanflow_config_from_checkpoint_dir(d)
        flow, conds = load_meanflow_flow(d / S3GEN_MEANFLOW_FILE, cfg), load_flow_conditionals(d / CONDS_FILE, cfg)
    flow = flow.to(spec.device, spec.torch_dtype).eval()
    return CFMPart(flow, conds.to(spec.device), TURBO, (SILENCE_TOKEN,) * N_SILENCE_TOKENS)


def cfm_noise(seed: int) -> NoiseSource:
    """The flow solver's position-indexed noise of a request."""
    return NoiseSource(derive_seed(seed, "cfm"))


def new_cfm_stream(cfm: CFMPart, req: RequestParams, conds: FlowConditionals | None = None) -> CFMStream:
    """A request's CFM state, conditioned on `conds` (a stored voice's part; default: the checkpoint's voice)."""
    return CFMStream(cfm.flow, cfm.conds if conds is None else conds, cfm_noise(req.seed), req.schedule, cfm.tail_tokens)
