"""T3 text front-end: the reference's punctuation clean-up and the BPE text tokenizer.

`encode_text` is the entry point: it rejects empty input, normalises, tokenises and checks
the length against the text position table, before any model compute.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from stages.common.weights import CheckpointError
from stages.t3.config import T3Config

SPACE_TOKEN = "[SPACE]"  # the tokenizer sees spaces as this literal special token
BUILTIN_TOKENIZER_FILE = "builtin_tokenizer.json"  # in stages/t3/data, made by make_builtin_tokenizer.py

EMPTY_TEXT_SENTENCE = "You need to add some text for me to talk."  # the reference's reply to ""
PUNCT_REPLACEMENTS = (  # applied in this order, after whitespace is collapsed
    ("...", ", "),
    ("…", ", "),
    (":", ","),
    (" - ", ", "),
    (";", ", "),
    ("—", "-"),
    ("–", "-"),
    (" ,", ","),
    ("“", '"'),
    ("”", '"'),
    ("‘", "'"),
    ("’", "'"),
)
SENTENCE_ENDINGS = (".", "!", "?", "-", ",")


def punc_norm(text: str) -> str:
    """The reference's clean-up of LLM-style punctuation (tts.py punc_norm), exactly."""
    if not text:
        return EMPTY_TEXT_SENTENCE
    if text[0].islower():
        text = text[0].upper() + text[1:]  # str.upper may lengthen it ("ß" -> "SS"), like the reference
    text = " ".join(text.split())
    for old, new in PUNCT_REPLACEMENTS:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not text.endswith(SENTENCE_ENDINGS):
        text += "."
    return text


class TextTokenizer:
    """A `tokenizers` JSON (BPE, either merges format) used the reference's way: ' ' -> [SPACE]."""

    def __init__(self, tokenizer, source: str):
        self._tok = tokenizer
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> "TextTokenizer":
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: tokenizer file not found")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise CheckpointError(f"{path}: not a readable tokenizers JSON ({e})") from e
        return cls(tok, str(path))

    @classmethod
    def builtin(cls) -> "TextTokenizer":
        """The shipped character-level tokenizer of the built-in model (any text; unknown chars -> [UNK])."""
        ref = resources.files("stages.t3").joinpath("data", BUILTIN_TOKENIZER_FILE)
        with resources.as_file(ref) as path:
            return cls.from_file(path)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Unpadded ids (the reference's EnTokenizer.text_to_tokens)."""
        return self._tok.encode(text.replace(" ", SPACE_TOKEN)).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False).replace(" ", "").replace(SPACE_TOKEN, " ")


def encode_text(text: str, tokenizer: TextTokenizer, cfg: T3Config) -> list[int]:
    """Request text -> unpadded T3 text ids; ValueError naming `text` for unusable input."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty or whitespace only")
    ids = tokenizer.encode(punc_norm(text))
    if not ids:
        raise ValueError("text produced no tokens")
    if len(ids) > cfg.max_text_tokens:
        raise ValueError(f"text is too long: {len(ids)} tokens, the model's limit is {cfg.max_text_tokens} "
                         "(split it into sentences)")
    bad = [i for i in ids if not 0 <= i < cfg.text_vocab_size]
    if bad:
        raise ValueError(f"text: tokenizer {tokenizer.source} produced ids {bad[:5]} outside the model's "
                         f"text vocabulary of {cfg.text_vocab_size}")
    return ids
