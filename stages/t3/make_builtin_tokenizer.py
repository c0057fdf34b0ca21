"""Generate stages/t3/data/builtin_tokenizer.json (run once; the output is shipped).

    .venv/bin/python -m stages.t3.make_builtin_tokenizer

A character-level `tokenizers` BPE (no merges) in the reference tokenizer's format: Whitespace
pre-tokenizer, specials [STOP]=0, [UNK]=1, [SPACE]=2, [START]=255, every other id a character.
Characters outside the table encode as [UNK]; all ids are < 704 (the text vocabulary).
"""
from __future__ import annotations

import sys
from pathlib import Path

TEXT_VOCAB = 704  # rows of text_emb
SPECIALS = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[START]": 255}


def characters() -> list[str]:
    chars = [chr(c) for c in range(0x21, 0x7F)]  # printable ASCII except space (94)
    chars += [chr(c) for c in range(0xA1, 0x100) if c != 0xAD]  # Latin-1 letters/symbols, no soft hyphen
    chars += [chr(c) for c in range(0x100, 0x180)]  # Latin Extended-A (accented European letters)
    chars += [chr(c) for c in range(0x391, 0x3CA) if c != 0x3A2]  # Greek
    chars += [chr(c) for c in range(0x400, 0x460)]  # Cyrillic
    chars += list("€–—‘’“”…•′″")  # common typography
    return chars


def build():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers import AddedToken

    vocab = dict(SPECIALS)
    free = (i for i in range(TEXT_VOCAB) if i not in SPECIALS.values())
    for ch, idx in zip(characters(), free):
        vocab[ch] = idx
    assert len(vocab) <= TEXT_VOCAB, len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(s, special=True) for s in SPECIALS])
    return tok


def main() -> None:
    out = Path(__file__).parent / "data" / "builtin_tokenizer.json"
    build().save(str(out), pretty=True)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
