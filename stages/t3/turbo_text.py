"""Chatterbox Turbo's text front end: its own punctuation clean-up and the GPT-2 byte-level BPE tokenizer.

`encode_turbo_text` is the entry point: it rejects empty input, normalises, tokenises (no BOS/EOS,
one sequence: what `ChatterboxTurboTTS.generate` feeds T3) and checks the length, before any compute.
The tokenizer is built with the `tokenizers` library from the checkpoint's GPT-2 files
(vocab.json, merges.txt, added_tokens.json with the 19 paralinguistic tags, special_tokens_map.json
and tokenizer_config.json when present): tags and `<|endoftext|>` are matched before BPE.
"""
from __future__ import annotations

import json
from pathlib import Path

from stages.common.weights import CheckpointError
from stages.t3.turbo_config import TurboT3Config

EMPTY_TEXT_SENTENCE = "You need to add some text for me to talk."  # the reference's reply to ""
PUNCT_REPLACEMENTS = (  # Turbo's list, applied in this order after whitespace is collapsed (no "...", " - ", ";")
    ("…", ", "),
    (":", ","),
    ("—", "-"),
    ("–", "-"),
    (" ,", ","),
    ("“", '"'),
    ("”", '"'),
    ("‘", "'"),
    ("’", "'"),
)
SENTENCE_ENDINGS = (".", "!", "?", "-", ",")

VOCAB_FILE, MERGES_FILE, ADDED_TOKENS_FILE = "vocab.json", "merges.txt", "added_tokens.json"
SPECIAL_TOKENS_FILE, TOKENIZER_CONFIG_FILE = "special_tokens_map.json", "tokenizer_config.json"
REQUIRED_TOKENIZER_FILES = (VOCAB_FILE, MERGES_FILE, ADDED_TOKENS_FILE)
END_OF_TEXT = "<|endoftext|>"  # GPT-2's only special token (bos = eos = unk)
GPT2_MAX_LENGTH = 1024  # GPT-2's model_max_length when tokenizer_config.json does not say
# The paralinguistic tags of Turbo, in their id order (50257..50275 in the released vocabulary).
TAGS = ("[angry]", "[fear]", "[surprised]", "[whispering]", "[advertisement]", "[dramatic]", "[narration]",
        "[crying]", "[happy]", "[sarcastic]", "[clear throat]", "[sigh]", "[shush]", "[cough]", "[groan]",
        "[sniff]", "[gasp]", "[chuckle]", "[laugh]")


def turbo_punc_norm(text: str) -> str:
    """Turbo's clean-up of LLM-style punctuation (tts_turbo.py punc_norm), exactly."""
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


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte, in its vocabulary order (ids 0..255).

    Printable Latin-1 bytes stand for themselves and come first in byte order; the other 68
    bytes (controls, space, DEL, NBSP, soft hyphen) follow, mapped to U+0100 onwards.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    rest = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(0x100 + i) for i in range(len(rest))]


class TurboTokenizer:
    """The GPT-2 byte-level BPE (+ tags) used the reference's way: one sequence, no BOS/EOS added."""

    def __init__(self, tokenizer, source: str, model_max_length: int = GPT2_MAX_LENGTH):
        self._tok = tokenizer
        self.source = source
        self.model_max_length = model_max_length

    @staticmethod
    def _assemble(bpe, specials: list[str], added: list[tuple[str, int]], source: str):
        from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers

        tok = Tokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(s, special=True) for s in specials])
        for text, _ in sorted(added, key=lambda kv: kv[1]):  # tokenizers numbers new tokens in call order
            tok.add_tokens([AddedToken(text, special=False)])
        wrong = [f"{t!r} -> {tok.token_to_id(t)} (file says {i})" for t, i in added if tok.token_to_id(t) != i]
        if wrong:
            raise CheckpointError(f"{source}: added token ids are not contiguous after the vocabulary: "
                                  f"{', '.join(wrong[:5])}")
        return tok

    @classmethod
    def from_dir(cls, directory: str | Path) -> "TurboTokenizer":
        """The tokenizer of a Turbo checkpoint folder; CheckpointError names the file that is wrong."""
        from tokenizers import models

        d = Path(directory)
        missing = [f for f in REQUIRED_TOKENIZER_FILES if not (d / f).is_file()]
        if missing:
            raise CheckpointError(f"{d}: GPT-2 tokenizer file(s) missing: {', '.join(missing)}")
        try:
            bpe = models.BPE.from_file(str(d / VOCAB_FILE), str(d / MERGES_FILE))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise CheckpointError(f"{d}: {VOCAB_FILE} / {MERGES_FILE} are not a readable GPT-2 BPE ({e})") from e
        added = _read_json(d / ADDED_TOKENS_FILE)
        if not isinstance(added, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in added.items()):
            raise CheckpointError(f"{d / ADDED_TOKENS_FILE}: expected a JSON object of token -> id")
        specials = {END_OF_TEXT}
        if (d / SPECIAL_TOKENS_FILE).is_file():
            for value in _read_json(d / SPECIAL_TOKENS_FILE).values():
                content = value.get("content") if isinstance(value, dict) else value
                if isinstance(content, str):
                    specials.add(content)
        max_len = GPT2_MAX_LENGTH
        if (d / TOKENIZER_CONFIG_FILE).is_file():
            value = _read_json(d / TOKENIZER_CONFIG_FILE).get("model_max_length", GPT2_MAX_LENGTH)
            if isinstance(value, int) and 0 < value < 1_000_000:  # HF writes ~1e30 for "no limit"
                max_len = value
        vocab = bpe.get_vocab() if hasattr(bpe, "get_vocab") else None
        absent = [s for s in specials if vocab is not None and s not in vocab and s not in added]
        if absent:
            raise CheckpointError(f"{d / VOCAB_FILE}: special token(s) {absent} are not in the vocabulary")
        tok = cls._assemble(bpe, sorted(specials), [(t, i) for t, i in added.items() if t not in specials], str(d))
        return cls(tok, str(d), max_len)

    @classmethod
    def builtin(cls) -> "TurboTokenizer":
        """The built-in models' tokenizer: byte-level with no merges (every byte one id, any text),
        `<|endoftext|>` = 256 and the 19 tags = 257..275."""
        from tokenizers import models

        vocab = {ch: i for i, ch in enumerate(byte_alphabet())}
        vocab[END_OF_TEXT] = len(vocab)
        bpe = models.BPE(vocab=vocab, merges=[])
        added = [(tag, len(vocab) + i) for i, tag in enumerate(TAGS)]
        return cls(cls._assemble(bpe, [END_OF_TEXT], added, "built-in"), "built-in Turbo byte tokenizer")

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        """All ids of `text` (no truncation: the caller decides what too long means)."""
        return self._tok.encode(text).ids

    def tokens(self, text: str) -> list[str]:
        return self._tok.encode(text).tokens

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file ({e})") from e


def encode_turbo_text(text: str, tokenizer: TurboTokenizer, cfg: TurboT3Config) -> list[int]:
    """Request text -> Turbo T3 text ids; ValueError naming `text` for unusable input.

    The reference silently truncates at the tokenizer's model_max_length (1024), dropping the rest
    of the text; here too long a text is an error instead, so no words are lost without a word.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty or whitespace only")
    ids = tokenizer.encode(turbo_punc_norm(text))
    if not ids:
        raise ValueError("text produced no tokens")
    limit = min(tokenizer.model_max_length, cfg.max_text_tokens)
    if len(ids) > limit:
        raise ValueError(f"text is too long: {len(ids)} tokens, Turbo's limit is {limit} (split it into sentences)")
    bad = [i for i in ids if not 0 <= i < cfg.text_vocab_size]
    if bad:
        raise ValueError(f"text: tokenizer {tokenizer.source} produced ids {bad[:5]} outside the model's "
                         f"text vocabulary of {cfg.text_vocab_size}")
    return ids
