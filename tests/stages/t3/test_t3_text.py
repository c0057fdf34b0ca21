"""T3 text front-end: punc_norm parity, tokenizers (built-in and both merges formats), bad text."""
from __future__ import annotations

import json

import pytest

from stages.t3.config import T3Config
from stages.t3.text import TextTokenizer, encode_text, punc_norm
from tests.golden import cases


@pytest.mark.parametrize("case", cases()["punc_norm"]["punc_norm"], ids=lambda c: repr(c["input"])[:30])
def test_punc_norm_matches_reference(case):
    assert punc_norm(case["input"]) == case["output"]


def test_builtin_tokenizer_any_text_within_vocab():
    cfg = T3Config.from_name("chatterbox")
    tok = TextTokenizer.builtin()
    ids = encode_text("Hello wörld, ça va? 漢字 🙂 Привет", tok, cfg)
    assert all(0 <= i < cfg.text_vocab_size for i in ids)
    assert 1 in ids  # [UNK] for characters outside the table
    assert 2 in ids  # [SPACE]
    assert cfg.start_text_token not in ids and cfg.stop_text_token not in ids
    assert tok.decode(tok.encode("Hi there.")) == "Hi there."


def _bpe_json(merges):
    vocab = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "a": 3, "b": 4, "ab": 5}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t, i in list(vocab.items())[:3]],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": merges},
    }


@pytest.mark.parametrize("merges", [["a b"], [["a", "b"]]], ids=["string-merges", "pair-merges"])
def test_tokenizer_loads_both_merges_formats(tmp_path, merges):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(_bpe_json(merges)))
    tok = TextTokenizer.from_file(path)
    assert tok.encode("ab ba") == [5, 2, 4, 3]


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_rejected(text):
    with pytest.raises(ValueError, match="text"):
        encode_text(text, TextTokenizer.builtin(), T3Config.from_name("tiny"))


def test_text_longer_than_position_table_rejected():
    cfg = T3Config.from_name("tiny")
    with pytest.raises(ValueError, match="text is too long"):
        encode_text("a" * (cfg.max_text_tokens + 1), TextTokenizer.builtin(), cfg)
