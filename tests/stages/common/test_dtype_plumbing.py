"""--dtype reaches every stage as documented: T3 weights, activations and KV cache in the dtype with fp32
logits, CFM in the dtype, HiFiGAN always float32; the CLI flag builds the spec; the padded-bucket T3 step in
bf16 keeps the eager tick's tokens; a bad dtype names the field."""
from __future__ import annotations

import pytest
import torch

from stages.common.spec import ModelSpec
from stages.t3.conds import builtin_t3_conditionals
from stages.t3.generate import admission
from stages.t3.graphs import attach_tick_graphs
from stages.t3.part import load_t3_part
from stages.t3.sampling import SamplingParams


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_bfloat16_reaches_t3_and_cfm_but_not_the_vocoder():
    from stages.cfm.part import load_cfm_part
    from stages.hifigan.part import load_hifigan_part

    spec = ModelSpec(dtype="bfloat16")
    batch = load_t3_part(spec, max_slots=2).batch
    assert batch.model.dtype == torch.bfloat16 and batch.cache.k[0].dtype == torch.bfloat16
    assert next(batch.model.model.parameters()).dtype == torch.bfloat16
    conds = builtin_t3_conditionals(batch.model.cfg)
    batch.admit([admission(batch, "a", [5, 6, 7], conds, SamplingParams(seed=1, max_new_tokens=3))])
    assert batch.logits.dtype == torch.float32  # logits and sampling in fp32
    assert load_cfm_part(spec).flow.encoder_proj.weight.dtype == torch.bfloat16
    assert load_hifigan_part(spec).stft_window.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of"):
        ModelSpec(dtype="int8").check()


def test_cli_dtype_builds_the_spec():
    from pipeline.cli_common import build_config

    kw = {"checkpoint": None, "hf_repo": None, "preset": "tiny", "device": "cpu", "dtype": "bfloat16",
          "t3_device": None, "cfm_device": None, "hifigan_device": "cpu", "t3_threads": None, "threads": 1,
          "transport": "ipc", "port": 0, "max_inflight": 4, "max_queue": 60, "cuda_graphs": False, "cuda_ipc": False}
    config = build_config(kw)
    assert config.model.dtype == "bfloat16" and config.stage_options == {"cuda_graphs": False}


def test_bf16_padded_bucket_step_keeps_the_eager_tokens():
    spec = ModelSpec(dtype="bfloat16")
    plain, padded = load_t3_part(spec, max_slots=3).batch, load_t3_part(spec, max_slots=3).batch
    attach_tick_graphs(padded, capture=False)
    conds = builtin_t3_conditionals(plain.model.cfg)
    out = []
    for batch in (plain, padded):
        reqs = [admission(batch, f"r{i}", [5 + i, 6, 7], conds, SamplingParams(seed=i, max_new_tokens=6 + 2 * i,
                                                                                  ignore_eos=True)) for i in range(3)]
        toks = {}
        for e in batch.admit(reqs):
            toks.setdefault(e.rid, []).append(e.token)
        while batch.active:
            for e in batch.tick():
                if e.token is not None:
                    toks.setdefault(e.rid, []).append(e.token)
        out.append(toks)
    assert out[0] == out[1] and [len(out[0][f"r{i}"]) for i in range(3)] == [6, 8, 10]
    assert {b for b, _ in padded.graphs.replays} == {1, 2, 3}  # the buckets as requests left
