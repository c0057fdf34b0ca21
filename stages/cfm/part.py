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
from stages.common.params import RequestParams
from stages.common.seeds import derive_seed
from stages.common.spec import CONDS_FILE, S3GEN_FILE, ModelSpec


@dataclass
class CFMPart:
    flow: Flow
    conds: FlowConditionals  # the default voice


def load_cfm_part(spec: ModelSpec) -> CFMPart:
    if spec.builtin:
        cfg = CFMConfig.from_name(spec.preset)
        flow, conds = build_builtin_flow(cfg), builtin_flow_conditionals(cfg)
    else:
        d = Path(spec.checkpoint)
        cfg = CFMConfig.from_checkpoint_dir(d)
        flow, conds = load_flow(d / S3GEN_FILE, cfg), load_flow_conditionals(d / CONDS_FILE, cfg)
    flow = flow.to(spec.device, spec.torch_dtype).eval()
    return CFMPart(flow, conds.to(spec.device))


def cfm_noise(seed: int) -> NoiseSource:
    """The flow solver's position-indexed noise of a request."""
    return NoiseSource(derive_seed(seed, "cfm"))


def new_cfm_stream(cfm: CFMPart, req: RequestParams, conds: FlowConditionals | None = None) -> CFMStream:
    """A request's CFM state, conditioned on `conds` (a stored voice's part; default: the checkpoint's voice)."""
    return CFMStream(cfm.flow, cfm.conds if conds is None else conds, cfm_noise(req.seed), req.schedule)
