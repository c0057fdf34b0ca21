"""CFM stage: the S3Gen flow (speech tokens -> 80-bin log-mel at 50 Hz): encoder, estimator, Euler/CFG solver, noise."""
from stages.cfm.checkpoint import build_builtin_flow, flow_schema, load_flow
from stages.cfm.conds import FlowConditionals, builtin_flow_conditionals, load_flow_conditionals
from stages.cfm.config import CFMConfig
from stages.cfm.flow import Flow
from stages.cfm.noise import NoiseSource

__all__ = [
    "CFMConfig",
    "Flow",
    "FlowConditionals",
    "NoiseSource",
    "build_builtin_flow",
    "builtin_flow_conditionals",
    "flow_schema",
    "load_flow",
    "load_flow_conditionals",
]
