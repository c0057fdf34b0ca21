"""The segmenter: no text lost, every segment within budget, tags intact, deterministic (hypothesis), and its rules."""
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.models import ModelSpec
from pipeline.text.budget import SegmentBudget, base_budget, for_model, tokenizer_counter
from pipeline.text.segment import TAG, normalise, segment_text
from stages.t3.text import TextTokenizer

COUNT = tokenizer_counter(TextTokenizer.builtin())  # the built-in model's real tokenizer (one token per character)
BASE = base_budget()

WORDS = st.sampled_from(["the", "cat", "Dr.", "U.S.", "3.5", "e.g.", "well", "naïve", "Zürich", "über", "café",
                         "x" * 30, "supercalifragilisticexpialidocious", "e\u0301t\u0301e\u0301", "👩\u200d💻", "…"])
PUNCT = st.sampled_from(["", "", ".", ",", ";", ":", "!", "?", "...", " -", " —", ")", '"', "'"])
TAGS = st.sampled_from(["[laughter]", "[sigh]", "[clear throat]", "[chuckle]"])
SPACE = st.sampled_from([" ", " ", " ", "  ", "\n", "\t", " \n\n "])
TOKEN = st.one_of(st.tuples(WORDS, PUNCT).map("".join), TAGS)
TEXT = st.lists(st.tuples(TOKEN, SPACE).map("".join), min_size=0, max_size=80).map("".join)
SMALL = st.builds(lambda t, s, c: SegmentBudget("test", max_text_tokens=t, max_speech_tokens=s, max_chars=c,
                                                speech_floor=5, speech_per_text_token=2),
                  st.integers(16, 120), st.integers(60, 400), st.integers(16, 200))


def tag_spans(text):
    return [(m.start(), m.end()) for m in TAG.finditer(text)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, budget=SMALL)
def test_properties(text, budget):
    seg = segment_text(text, budget, COUNT)
    norm = seg.normalised
    assert norm == " ".join(text.split())
    # no text lost: the spans tile the normalised text
    assert "".join(norm[s.start:s.end] for s in seg.segments) == norm
    assert [s.start for s in seg.segments[1:]] == [s.end for s in seg.segments[:-1]]
    assert all(s.text == norm[s.start:s.end].strip() and s.text for s in seg.segments)
    # every segment within budget (each atomic unit here fits the smallest budget)
    for s in seg.segments:
        assert budget.admits(COUNT(s.text), len(s.text)), (s.text, budget)
        assert s.text_tokens == COUNT(s.text)
    # tags intact: no cut falls inside an event tag
    cuts = {s.start for s in seg.segments}
    assert not any(a < c < b for a, b in tag_spans(norm) for c in cuts)
    # deterministic
    assert segment_text(text, budget, COUNT) == seg


@settings(max_examples=40, deadline=None)
@given(text=TEXT)
def test_a_text_that_fits_is_one_segment_and_sentences_that_fit_are_never_cut(text):
    seg = segment_text(text, BASE, COUNT)
    if seg.normalised and BASE.admits(COUNT(seg.normalised), len(seg.normalised)):
        assert len(seg.segments) == 1


def test_sentences_are_merged_up_to_the_budget_and_split_at_sentence_ends():
    text = "Hi! Ok. Fine. " + "This is a longer sentence of words. " * 3
    seg = segment_text(text, BASE, COUNT)
    assert seg.texts[0].startswith("Hi! Ok. Fine.")  # short sentences travel with their neighbours
    assert all(t.endswith(".") for t in seg.texts)  # cut only at sentence ends: each of these sentences fits
    assert all(BASE.admits(COUNT(t), len(t)) for t in seg.texts)


def test_abbreviations_and_decimals_are_not_sentence_ends():
    budget = SegmentBudget("t", max_text_tokens=45, max_speech_tokens=10 ** 6, max_chars=45)
    seg = segment_text("Dr. Smith paid 3.5 dollars. Mr. Jones paid more.", budget, COUNT)
    assert seg.texts == ["Dr. Smith paid 3.5 dollars.", "Mr. Jones paid more."]


def test_long_sentence_splits_at_clauses_then_words_then_characters():
    budget = SegmentBudget("t", max_text_tokens=30, max_speech_tokens=10 ** 6, max_chars=30)
    seg = segment_text("one two three, four five six seven; eight nine ten eleven twelve thirteen", budget, COUNT)
    assert seg.texts == ["one two three,", "four five six seven;", "eight nine ten eleven twelve", "thirteen"]
    url = "https://example.com/" + "a" * 70
    seg = segment_text(f"See {url} now.", budget, COUNT)
    assert "".join(seg.normalised[s.start:s.end] for s in seg.segments) == f"See {url} now."
    assert seg.texts[0] == "See" and all(len(t) <= 29 for t in seg.texts)  # 29 + punc_norm's "." = 30 tokens
    assert seg.texts[-1] == "aaa now."  # the tail of the word travels with the next one


def test_event_tags_stay_whole():
    budget = SegmentBudget("t", max_text_tokens=14, max_speech_tokens=10 ** 6, max_chars=14)
    seg = segment_text("ab[clear throat]cd[laughter]", budget, COUNT)
    assert "[clear throat]" in seg.texts and any("[laughter]" in t for t in seg.texts)


def test_line_breaks_are_sentence_boundaries_and_whitespace_is_normalised():
    norm, starts = normalise("  Chapter One\n\n  It   was\tdark. \n")
    assert norm == "Chapter One It was dark." and starts == [12]
    budget = SegmentBudget("t", max_text_tokens=22, max_speech_tokens=10 ** 6, max_chars=22)
    assert segment_text("Chapter One\nIt was dark and cold.", budget, COUNT).texts == ["Chapter One", "It was dark and cold."]


def test_empty_and_whitespace_give_no_segments():
    assert segment_text("", BASE, COUNT).segments == ()
    assert segment_text(" \n\t ", BASE, COUNT).segments == ()
    with pytest.raises(ValueError, match="text must be a string"):
        segment_text(None, BASE, COUNT)


def test_pysbd_failure_falls_back_to_the_punctuation_rule(monkeypatch):
    import pysbd

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(pysbd, "Segmenter", broken)
    budget = SegmentBudget("t", max_text_tokens=25, max_speech_tokens=10 ** 6, max_chars=25)
    seg = segment_text("First one here. Second one here! Third?", budget, COUNT)
    assert seg.texts == ["First one here.", "Second one here! Third?"]


def test_base_budget_is_the_default_cap_under_the_ceiling():
    # 50 + 20 * n <= 1000: 47 text tokens (the built-in tokenizer counts characters, plus punc_norm's full stop)
    assert BASE.max_text_tokens == 2048 and BASE.max_speech_tokens == 1000 and BASE.max_chars == 350
    assert BASE.admits(47, 47) and not BASE.admits(48, 48)
    seg = segment_text("word " * 400, BASE, COUNT)
    assert max(s.text_tokens for s in seg.segments) <= 47 and max(s.expected_speech_tokens for s in seg.segments) <= 1000


def test_turbo_budget_counts_turbo_tokens_and_keeps_under_its_training_caps():
    """Turbo segments are counted with Turbo's own front end (its punc_norm, its GPT-2 BPE with the tags as single
    tokens), exactly as its T3 encodes them: here the golden turbo-tiny tokenizer files."""
    from stages.t3.turbo_config import TurboT3Config
    from stages.t3.turbo_text import TurboTokenizer, encode_turbo_text
    from tests.golden_turbo import TURBO_DIR

    tb, count = for_model(ModelSpec(checkpoint=TURBO_DIR, model="turbo"))
    assert (tb.model, tb.max_text_tokens, tb.max_speech_tokens, tb.max_chars) == ("turbo", 402, 604, 350)
    tok, cfg = TurboTokenizer.from_dir(TURBO_DIR), TurboT3Config.from_checkpoint_dir(TURBO_DIR)
    for text in ("Hello world", "Oh that's hilarious [laugh], anyway [clear throat] where were we?"):
        assert count(text) == len(encode_turbo_text(text, tok, cfg))
    assert count("Hello world") == 4  # [649, 916, 582] + the full stop Turbo's punc_norm adds
    assert count("[laugh]") < len("[laugh]")  # a tag is one token, not its bytes
    text = " ".join(f"Sentence {i} is a plain sentence, of some length [laugh]." for i in range(60))
    seg = segment_text(text, tb, count)
    assert all(len(s.text) <= 350 and s.text_tokens <= 402 and s.expected_speech_tokens <= 604 for s in seg.segments)
    assert all(s.text_tokens == count(s.text) for s in seg.segments)
    assert len(seg.segments) > 1 and re.fullmatch(r".*\.", seg.texts[0])


def test_the_built_in_turbo_presets_count_with_the_built_in_byte_tokenizer():
    from stages.t3.turbo_config import TurboT3Config
    from stages.t3.turbo_text import TurboTokenizer, encode_turbo_text

    tb, count = for_model(ModelSpec(preset="turbo-tiny"))
    assert tb.model == "turbo" and tb.max_text_tokens == 402
    text = "Ünïcode bytes, and a tag [laugh]"
    assert count(text) == len(encode_turbo_text(text, TurboTokenizer.builtin(), TurboT3Config.from_name("turbo-tiny")))
    assert count(text) == len("Ünïcode bytes, and a tag ".encode()) + 1 + 1  # bytes, the tag as one id, the "."


def test_a_long_line_goes_to_pysbd_in_blocks_without_moving_a_boundary(monkeypatch):
    import pipeline.text.segment as segment

    line = " ".join(f"Part {i} ends here. Dr. Smith met Mr. J. R. Jones at 3.5 p.m. on the U.S. coast, e.g. in Maine. "
                    f"\"Quoted,\" she said. (Aside.) Then {i} more." for i in range(45))
    assert len(line) > 3 * segment.PYSBD_BLOCK_CHARS and len(segment._blocks(line)) >= 3
    blocked = segment_text(line, BASE, COUNT)
    monkeypatch.setattr(segment, "PYSBD_BLOCK_CHARS", 10 ** 9)  # pysbd on the whole line at once
    assert segment._blocks(line) == []
    assert segment_text(line, BASE, COUNT) == blocked
