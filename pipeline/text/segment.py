"""Long text -> segments that each fit one T3 request (`pipeline/text/budget.py`), never losing a character.

1. **Normalise**: every whitespace run becomes one space, the ends are stripped
   (`" ".join(text.split())`). Line breaks are remembered as sentence boundaries, so a
   heading or a list item without a full stop still ends where it ends.
2. **Sentences**: `pysbd` (rule-based sentence boundary disambiguation, the Golden Rules
   set: abbreviations, initials, decimals, ellipses, quotes; pure Python, deterministic),
   run per line, a long line in blocks of ~2,000 characters cut after plain sentence ends
   (pysbd's time grows with the square of its input). Its output only *proposes* cut positions: the segments are slices of the
   normalised text, so a library quirk can move a boundary but never change or drop text.
   If pysbd fails on an input, the boundaries fall back to one documented rule: a run of
   `. ! ? …`, optional closing quotes or brackets, then a space.
3. **Splitting** a sentence over budget: at clause boundaries (after `, ; : )` or a dash,
   closing quotes allowed, then a space), then at spaces, then between characters (a
   "word" longer than the budget, e.g. a URL). Cuts never fall inside an event tag such as
   `[laughter]` or `[clear throat]`, nor before a combining mark or around a zero-width joiner.
4. **Merging**: consecutive pieces are packed greedily, first to last, while the union
   still fits; a sentence that fits is never cut. Short sentences ("Hi!") thus travel with
   their neighbours, which also avoids the model's trouble with very short inputs.

Invariant (tested with hypothesis): `"".join(normalised[s.start:s.end] for s in segments)
== normalised`; each segment keeps its trailing space in its span, and `Segment.text`
(the span stripped) is what is synthesized. Only a single unit that alone exceeds the
budget (a tag or one character, impossible with the shipped budgets) can be over it.
"""
from __future__ import annotations

import bisect
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

from pipeline.text.budget import SegmentBudget, TokenCounter

TAG = re.compile(r"\[[A-Za-z][A-Za-z0-9_' -]{0,38}\]")  # event tags: [laughter], [sigh], [clear throat]
CLAUSE_END = re.compile(r"[,;:)\u2014\u2013-][\"'\u201d\u2019\u00bb]* ")  # cut after the space
SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]\u00bb]* ")  # the fallback rule, cut after the space
ZWJ = "\u200d"  # joins emoji sequences: never cut next to it
log = logging.getLogger("tts.text")


@dataclass(frozen=True)
class Segment:
    start: int  # [start, end) in the normalised text; the span includes the trailing space
    end: int
    text: str  # the span without surrounding spaces: what is synthesized
    text_tokens: int
    expected_speech_tokens: float


@dataclass(frozen=True)
class Segmentation:
    normalised: str
    segments: tuple[Segment, ...]

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.segments]


def normalise(text: str) -> tuple[str, list[int]]:
    """(whitespace-normalised text, offsets where an input line starts in it)."""
    normalised = " ".join(text.split())
    starts, pos = [], 0
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if pos:
            pos += 1  # the space that joins the lines
            starts.append(pos)
        pos += len(" ".join(words))
    return normalised, starts


PYSBD_BLOCK_CHARS = 2000  # pysbd's abbreviation pass is quadratic in its input (100k characters: 16 s); fed in blocks
# A block ends after a plain sentence end: a lowercase word of 3+ letters, a full stop, a space ("stops here. "),
# which no abbreviation rule of pysbd treats as anything but a sentence end, so blocks do not move boundaries.
BLOCK_END = re.compile(r"[a-z]{3}[.!?][\"'\u201d\u2019)]* (?=[A-Z\"'\u201c\u2018(])")


def _blocks(para: str) -> list[int]:
    """Offsets where `para` is cut into blocks of about PYSBD_BLOCK_CHARS (none for a short paragraph)."""
    cuts, last = [], 0
    for m in BLOCK_END.finditer(para):
        if m.end() - last >= PYSBD_BLOCK_CHARS:
            cuts.append(m.end())
            last = m.end()
    return cuts


def _sentence_offsets(para: str) -> list[int]:
    """Offsets (> 0) where a sentence of `para` starts (long paragraphs go to pysbd in blocks, see PYSBD_BLOCK_CHARS)."""
    cuts = _blocks(para)
    if cuts:
        offsets = []
        for a, b in zip([0, *cuts], [*cuts, len(para)]):
            if a:
                offsets.append(a)
            offsets.extend(a + off for off in _block_sentence_offsets(para[a:b]))
        return offsets
    return _block_sentence_offsets(para)


def _block_sentence_offsets(para: str) -> list[int]:
    """Offsets (> 0) where a sentence of `para` starts, by pysbd (or the documented fallback rule)."""
    try:
        import pysbd

        parts = pysbd.Segmenter(language="en", clean=False).segment(para)  # one per call: pysbd keeps state
    except Exception as e:  # a library bug must not lose the text: use the documented rule instead
        log.warning("pysbd failed (%s: %s); splitting sentences by punctuation", type(e).__name__, e)
        parts = None
    offsets, pos = [], 0
    if parts is not None and "".join(parts) == para:
        for p in parts[:-1]:
            pos += len(p)
            offsets.append(pos)
    elif parts is not None:  # pysbd altered the text: find each sentence where it is
        for p in parts:
            at = para.find(p.strip(), pos)
            if at < 0:
                continue
            if at > 0:
                offsets.append(at)
            pos = at + len(p.strip())
    else:
        offsets = [m.end() for m in SENTENCE_END.finditer(para) if m.end() < len(para)]
    return offsets


class _Cutter:
    """The cut positions of one normalised text, by level, and the budget check of a span."""

    def __init__(self, text: str, line_starts: list[int], budget: SegmentBudget, count: TokenCounter):
        self.text, self.budget, self.count = text, budget, count
        n = len(text)
        inside_tag = set()
        for m in TAG.finditer(text):
            inside_tag.update(range(m.start() + 1, m.end()))
        self.allowed = [p for p in range(1, n) if p not in inside_tag and not unicodedata.combining(text[p])
                        and text[p] != ZWJ and text[p - 1] != ZWJ]
        ok = set(self.allowed)
        sentences = set(line_starts)
        bounds = [0, *line_starts, n + 1]
        for a, b in zip(bounds, bounds[1:]):
            sentences.update(a + off for off in _sentence_offsets(text[a:b - 1]))
        self.sentence = sorted(p for p in sentences if p in ok and text[p] != " ")
        self.clause = sorted(m.end() for m in CLAUSE_END.finditer(text) if m.end() in ok)
        self.word = [p for p in self.allowed if text[p - 1] == " "]
        self.levels = [self.sentence, self.clause, self.word, self.allowed]
        self._memo: dict[tuple[int, int], tuple[int, int]] = {}

    def measure(self, a: int, b: int) -> tuple[int, int]:
        """(text tokens, characters) of the span as it will be synthesized."""
        if (a, b) not in self._memo:
            t = self.text[a:b].strip()
            self._memo[(a, b)] = (self.count(t) if t else 0, len(t))
        return self._memo[(a, b)]

    def fits(self, a: int, b: int) -> bool:
        return self.budget.admits(*self.measure(a, b))

    def pack(self, a: int, b: int, cuts: list[int], finer: Callable[[int, int], list] | None) -> list[tuple[int, int]]:
        """Greedy: the longest run of units from `a` that fits, then the next; a unit too big alone goes to `finer`."""
        lo, hi = bisect.bisect_right(cuts, a), bisect.bisect_left(cuts, b)  # cuts are sorted: the ones inside (a, b)
        points = [a, *cuts[lo:hi], b]
        out, i = [], 0
        while i < len(points) - 1:
            start, j = points[i], i + 1
            if not self.fits(start, points[j]):
                out.extend(finer(points[i], points[j]) if finer else [(points[i], points[j])])
                i = j
                continue
            while j + 1 < len(points) and self.fits(start, points[j + 1]):
                j += 1
            out.append((start, points[j]))
            i = j
        return out

    def split(self, a: int, b: int, level: int = 0) -> list[tuple[int, int]]:
        finer = (lambda x, y: self.split(x, y, level + 1)) if level + 1 < len(self.levels) else None
        return self.pack(a, b, self.levels[level], finer)


def segment_text(text: str, budget: SegmentBudget, count: TokenCounter) -> Segmentation:
    """Split `text` into segments within `budget` (text tokens counted by `count`), deterministically."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    normalised, line_starts = normalise(text)
    if not normalised:
        return Segmentation(normalised, ())
    cutter = _Cutter(normalised, line_starts, budget, count)
    pieces = cutter.split(0, len(normalised))
    merged = cutter.pack(0, len(normalised), [b for _, b in pieces[:-1]], None)  # rejoin the tails of split sentences
    segments = []
    for a, b in merged:
        tokens, chars = cutter.measure(a, b)
        segments.append(Segment(a, b, normalised[a:b].strip(), tokens, budget.expected_speech_tokens(tokens, chars)))
    return Segmentation(normalised, tuple(segments))
