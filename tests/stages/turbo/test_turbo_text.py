"""Turbo's text front end against the golden `text_frontend` case: punc_norm, the GPT-2 BPE with tags."""
from __future__ import annotations

import json

import pytest

from stages.common.weights import CheckpointError
from stages.t3.turbo_text import TAGS, TurboTokenizer, encode_turbo_text, turbo_punc_norm
from tests.golden_turbo import TURBO_DIR, cases

FRONT = cases()["text_frontend"]
BY_ID = [t for t in FRONT["tokenizer"] if "ids" in t]


@pytest.fixture(scope="module")
def tok():
    return TurboTokenizer.from_dir(TURBO_DIR)


@pytest.mark.parametrize("pair", FRONT["punc_norm"], ids=lambda p: repr(p["input"])[:40])
def test_punc_norm(pair):
    assert turbo_punc_norm(pair["input"]) == pair["output"]


@pytest.mark.parametrize("item", BY_ID, ids=lambda t: repr(t["input"])[:40])
def test_tokenizer_ids_and_tokens(tok, item):
    assert tok.encode(item["input"]) == item["ids"]
    assert tok.tokens(item["input"]) == item["tokens"]
    assert turbo_punc_norm(item["input"]) == item["punc_norm"]
    assert tok.encode(item["punc_norm"]) == item["punc_norm_ids"]


def test_readme_examples(tok):
    assert tok.encode("Hello world") == [649, 916, 582]
    assert tok.encode("Oh that's hilarious [laugh], anyway [clear throat] where were we?")[8:11] == [429, 220, 999]


def test_vocabulary(tok):
    info = FRONT["tokenizer_info"]
    assert tok.vocab_size == info["len"] == 1000
    assert tok.token_to_id("<|endoftext|>") == info["eos_token_id"]
    assert {t: tok.token_to_id(t) for t in info["added_tags"]} == info["added_tags"]
    assert tuple(info["added_tags"]) == TAGS  # the released order
    assert tok.model_max_length == info["model_max_length"]


def test_too_long_text_is_refused_not_truncated(tok, t3_cfg):
    """The reference cuts at 1024 tokens silently; the engine refuses, naming the length."""
    ref = next(t for t in FRONT["tokenizer"] if "n_ids" in t)
    text = " ".join(["word"] * 1100)
    ids = tok.encode(text)
    assert len(ids) > ref["n_ids"] == 1024
    assert ids[:4] == ref["ids_head"] and ids[1020:1024] == ref["ids_tail"]
    with pytest.raises(ValueError, match=r"text is too long: \d+ tokens, Turbo's limit is 1024"):
        encode_turbo_text(text, tok, t3_cfg)


def test_encode_turbo_text(tok, t3_cfg):
    assert encode_turbo_text("Hi [laugh] there.", tok, t3_cfg) == [39, 72, 220, 999, 259, 265, 13]
    for bad in ("", "   \n"):
        with pytest.raises(ValueError, match="text is empty"):
            encode_turbo_text(bad, tok, t3_cfg)
    with pytest.raises(ValueError, match="text must be a str"):
        encode_turbo_text(b"bytes", tok, t3_cfg)


def test_builtin_tokenizer():
    b = TurboTokenizer.builtin()
    assert b.vocab_size == 256 + 1 + len(TAGS)
    assert b.token_to_id("<|endoftext|>") == 256 and b.token_to_id("[laugh]") == 275
    text = "Zoë says [sigh] 日本 <|endoftext|>"
    ids = b.encode(text)
    assert b.token_to_id("[sigh]") in ids and 256 in ids  # tags and <|endoftext|> are matched before the bytes
    assert b.decode(ids) == text


def test_tokenizer_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="GPT-2 tokenizer file\\(s\\) missing: vocab.json, merges.txt, added_tokens.json"):
        TurboTokenizer.from_dir(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((TURBO_DIR / name).read_bytes())
    (tmp_path / "added_tokens.json").write_text(json.dumps({"[laugh]": 5000}))
    with pytest.raises(CheckpointError, match="added token ids are not contiguous"):
        TurboTokenizer.from_dir(tmp_path)
    (tmp_path / "added_tokens.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="added_tokens.json: not a readable JSON file"):
        TurboTokenizer.from_dir(tmp_path)
