"""Flow weights: the checkpoint schema, strict loading of s3gen.safetensors `flow.*`, and the built-in random weights."""
from __future__ import annotations

from pathlib import Path

import torch

from stages.cfm.config import CFMConfig
from stages.cfm.flow import Flow
from stages.common.weights import Schema, random_checkpoint, read_checkpoint, schema_from_module, strip_prefix

PREFIX = "flow."  # the flow's keys in s3gen.safetensors
# Other parts of s3gen.safetensors (vocoder, S3 tokenizer, CAMPPlus): owned elsewhere, absent is fine.
OTHER_PARTS = ("mel2wav.", "tokenizer.", "speaker_encoder.")


def flow_schema(cfg: CFMConfig) -> Schema:
    """Checkpoint key (with the `flow.` prefix) -> shape and init branch, for every flow tensor."""
    with torch.device("meta"):  # shapes only: no memory for the ~100 M real-size parameters
        return schema_from_module(Flow(cfg), PREFIX)


def _flow_from_tensors(cfg: CFMConfig, tensors: dict[str, torch.Tensor]) -> Flow:
    with torch.device("meta"):
        flow = Flow(cfg)
    flow.load_state_dict(strip_prefix(tensors, PREFIX), strict=True, assign=True)
    flow.requires_grad_(False)
    return flow.eval()


def load_flow(path: str | Path, cfg: CFMConfig) -> Flow:
    """The flow of an s3gen.safetensors file, loaded unchanged; raises CheckpointError naming the file and keys."""
    tensors = read_checkpoint(path, flow_schema(cfg), ignore_prefixes=OTHER_PARTS)
    return _flow_from_tensors(cfg, tensors)


def build_builtin_flow(cfg: CFMConfig) -> Flow:
    """The built-in random-weight flow (golden recipe): for `tiny` bit-identical to the golden s3gen.safetensors."""
    return _flow_from_tensors(cfg, random_checkpoint(flow_schema(cfg)))
