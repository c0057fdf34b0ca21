"""How much text one segment of a long text may carry, per model, and how its text tokens are counted.

A segment must stay inside what the model was trained on and what one T3 request can
hold. Three limits per model, all checked on the segment exactly as T3 will see it
(after `punc_norm`):

- **text tokens**, counted with the model's own tokenizer where it is available;
- **expected speech tokens**, from a per-model linear estimate (`expected_speech_tokens`);
- **characters**: Chatterbox garbles or drifts on long inputs ("texts over ~350
  characters", resemble-ai/chatterbox #97 / #424; users chunk by sentence).

| model | text tokens | expected speech tokens | characters | estimate | numbers from |
|---|---|---|---|---|---|
| `chatterbox` (presets `chatterbox`, `small`, `tiny`) | `T3Config.max_text_tokens` (2048) | `DEFAULT_MAX_NEW_TOKENS` (1000 = 40 s) | 350 | T3's default cap: 50 + 20 per text token | `stages/t3/config.py`, `stages/t3/sampling.py` |
| `turbo` (presets `turbo`, `turbo-small`, `turbo-tiny`) | 402 (counted with Turbo's GPT-2 tokenizer after Turbo's `punc_norm`) | 604 | 350 | speaking rate: 1.7 speech tokens per character | Turbo's training caps |

For the base model the speech limit is the binding one: a segment is admitted only while
T3's *default* speech-token cap for it (`default_max_new_tokens`, 50 + 20 per text token)
stays at or under the 1000-token ceiling, i.e. at most 47 text tokens. That is the
guarantee that a segment's speech is never cut by the cap T3 sizes from its text. Turbo's
caps are its training limits; its speech estimate is 25 tokens/s over ~15 characters/s of
read English, which puts the 350-character limit at ~595 speech tokens, inside 604.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

TokenCounter = Callable[[str], int]  # segment text -> text tokens the model will see

GARBLE_CHARS = 350  # characters past which users report garbled speech (chatterbox #97 / #424)
TURBO_TEXT_TOKENS = 402  # Turbo's training cap on text tokens per utterance
TURBO_SPEECH_TOKENS = 604  # Turbo's training cap on speech tokens per utterance
SPEECH_TOKENS_PER_CHAR = 1.7  # 25 speech tokens/s over ~15 characters/s of read English (150 wpm)


@dataclass(frozen=True)
class SegmentBudget:
    """The limits one segment must respect, and the speech-token estimate they are checked with."""

    model: str
    max_text_tokens: int
    max_speech_tokens: int
    max_chars: int
    speech_floor: float = 0.0  # expected speech tokens = floor + per_text_token * n + per_char * chars
    speech_per_text_token: float = 0.0
    speech_per_char: float = 0.0

    def expected_speech_tokens(self, text_tokens: int, chars: int) -> float:
        return self.speech_floor + self.speech_per_text_token * text_tokens + self.speech_per_char * chars

    def admits(self, text_tokens: int, chars: int) -> bool:
        return (chars <= self.max_chars and text_tokens <= self.max_text_tokens
                and self.expected_speech_tokens(text_tokens, chars) <= self.max_speech_tokens)

    def __post_init__(self) -> None:
        if min(self.max_text_tokens, self.max_speech_tokens, self.max_chars) < 1:
            raise ValueError(f"segment budget {self.model}: every limit must be >= 1, got {self}")


def base_budget(t3_config=None) -> SegmentBudget:
    """The base Chatterbox model's budget, from its T3 config (default: the `chatterbox` preset)."""
    from stages.t3.config import T3Config
    from stages.t3.sampling import DEFAULT_MAX_NEW_TOKENS, DEFAULT_MIN_NEW_TOKENS, DEFAULT_TOKENS_PER_TEXT_TOKEN

    cfg = t3_config or T3Config()
    return SegmentBudget("chatterbox", max_text_tokens=cfg.max_text_tokens,
                         max_speech_tokens=min(DEFAULT_MAX_NEW_TOKENS, cfg.max_speech_tokens), max_chars=GARBLE_CHARS,
                         speech_floor=DEFAULT_MIN_NEW_TOKENS, speech_per_text_token=DEFAULT_TOKENS_PER_TEXT_TOKEN)


def turbo_budget(t3_config=None) -> SegmentBudget:
    """Turbo's budget; a `TurboT3Config` whose text limit is lower than the training cap lowers it."""
    text_cap = min(TURBO_TEXT_TOKENS, t3_config.max_text_tokens) if t3_config is not None else TURBO_TEXT_TOKENS
    return SegmentBudget("turbo", max_text_tokens=text_cap, max_speech_tokens=TURBO_SPEECH_TOKENS,
                         max_chars=GARBLE_CHARS, speech_per_char=SPEECH_TOKENS_PER_CHAR)


BUDGETS: dict[str, Callable[[], SegmentBudget]] = {"chatterbox": base_budget, "turbo": turbo_budget}


def budget_for(model: str, t3_config=None) -> SegmentBudget:
    """The budget of a model family by name; its numbers come from the family's T3 config when given."""
    if model not in BUDGETS:
        raise ValueError(f"no segment budget for model {model!r}; known: {', '.join(sorted(BUDGETS))}")
    return BUDGETS[model](t3_config)


def model_family(spec) -> str:
    """The spec's family: its --model, else its preset's, else the checkpoint's detected layout."""
    return spec.kind


def tokenizer_counter(tokenizer, punc_norm=None) -> TokenCounter:
    """Text tokens exactly as T3 counts them: the family's `punc_norm`, then its tokenizer
    (stages/t3/text.py for the base model, stages/t3/turbo_text.py for Turbo)."""
    if punc_norm is None:
        from stages.t3.text import punc_norm

    return lambda text: len(tokenizer.encode(punc_norm(text)))


def turbo_for_model(spec) -> tuple[SegmentBudget, TokenCounter]:
    """Turbo's budget and counter: its GPT-2 tokenizer (the checkpoint's files, or the built-in byte tokenizer)."""
    from stages.t3.turbo_config import TurboT3Config
    from stages.t3.turbo_text import TurboTokenizer, turbo_punc_norm

    if spec.checkpoint is None:
        cfg, tok = TurboT3Config.from_name(spec.preset), TurboTokenizer.builtin()
    else:
        d = Path(spec.checkpoint)
        cfg, tok = TurboT3Config.from_checkpoint_dir(d), TurboTokenizer.from_dir(d)
    return budget_for("turbo", cfg), tokenizer_counter(tok, turbo_punc_norm)


def for_model(spec) -> tuple[SegmentBudget, TokenCounter]:
    """The budget and the token counter of a `pipeline.models.ModelSpec` (reads only the tokenizer and config)."""
    from stages.t3.config import T3Config
    from stages.t3.text import TextTokenizer

    family = model_family(spec)
    if family == "turbo":
        return turbo_for_model(spec)
    if spec.checkpoint is None:
        return budget_for(family, T3Config.from_name(spec.preset)), tokenizer_counter(TextTokenizer.builtin())
    d = Path(spec.checkpoint)
    from stages.common.spec import TOKENIZER_FILE

    return budget_for(family, T3Config.from_checkpoint_dir(d)), tokenizer_counter(TextTokenizer.from_file(d / TOKENIZER_FILE))
