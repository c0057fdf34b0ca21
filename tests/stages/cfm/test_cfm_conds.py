"""conds.pt -> FlowConditionals: the golden file, malformed files, and the built-in made-up voice."""
from __future__ import annotations

import pytest
import torch

from stages.cfm import CFMConfig, builtin_flow_conditionals, load_flow_conditionals
from stages.common.weights import CheckpointError
from tests.golden import GOLDEN_DIR, load_case

CONDS = GOLDEN_DIR / "conds.pt"


def _gen(**over):
    c = load_case("conds")
    gen = {
        "prompt_token": c["gen_prompt_token"],
        "prompt_token_len": c["gen_prompt_token_len"],
        "prompt_feat": c["gen_prompt_feat"],
        "prompt_feat_len": None,
        "embedding": c["gen_embedding"],
    }
    gen.update(over)
    return gen


def _save(tmp_path, gen, name="conds.pt"):
    path = tmp_path / name
    torch.save({"t3": {}, "gen": gen}, path)
    return path


def test_golden_conds():
    c = load_case("conds")
    conds = load_flow_conditionals(CONDS)
    assert torch.equal(conds.prompt_token, c["gen_prompt_token"])
    assert torch.equal(conds.prompt_feat, c["gen_prompt_feat"])
    assert torch.equal(conds.embedding, c["gen_embedding"])
    assert conds.n_prompt_frames == 2 * conds.n_prompt_tokens == 80


def test_non_contiguous_prompt_feat(tmp_path):
    feat = _gen()["prompt_feat"]
    stored = feat.transpose(1, 2).contiguous().transpose(1, 2)  # a transposed view, as in the real file
    assert not stored.is_contiguous()
    conds = load_flow_conditionals(_save(tmp_path, _gen(prompt_feat=stored)))
    assert torch.equal(conds.prompt_feat, feat) and conds.prompt_feat.is_contiguous()


def test_token_mel_mismatch_is_aligned(tmp_path):
    gen = _gen()
    conds = load_flow_conditionals(_save(tmp_path, _gen(prompt_feat=gen["prompt_feat"][:, :71])))  # 71 frames, 40 tokens
    assert conds.n_prompt_tokens == 35 and conds.n_prompt_frames == 70
    assert torch.equal(conds.prompt_token, gen["prompt_token"][:, :35])


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_flow_conditionals(tmp_path / "absent.pt")


@pytest.mark.parametrize(
    "content,match",
    [
        (b"garbage", "not a readable"),
        ({"t3": {}}, "'gen'"),
        ({"gen": {}}, "prompt_token is missing"),
    ],
)
def test_malformed_files(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=match):
        load_flow_conditionals(path)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("embedding", torch.zeros(1, 256), "embedding has shape"),
        ("prompt_feat", torch.zeros(1, 80, 79), "prompt_feat has shape"),
        ("prompt_token", torch.full((1, 40), 6561), "outside"),
        ("prompt_token", torch.zeros(1, 40), "integer"),
        ("embedding", torch.full((1, 192), float("nan")), "NaN"),
    ],
)
def test_bad_fields(tmp_path, field, value, match):
    with pytest.raises(CheckpointError, match=match):
        load_flow_conditionals(_save(tmp_path, _gen(**{field: value})))


def test_builtin_conds_deterministic_and_plausible():
    cfg = CFMConfig.from_name("tiny")
    a, b = builtin_flow_conditionals(cfg), builtin_flow_conditionals(cfg)
    assert torch.equal(a.prompt_token, b.prompt_token) and torch.equal(a.prompt_feat, b.prompt_feat)
    assert a.prompt_token.dtype == torch.int64 and int(a.prompt_token.max()) < cfg.vocab_size
    assert a.prompt_feat.shape == (1, 2 * a.n_prompt_tokens, 80)
    assert -5.0 <= float(a.prompt_feat.min()) and float(a.prompt_feat.max()) <= 0.0
    assert a.embedding.shape == (1, 192)
