"""The benchmark's workload: built-in texts, fixed token counts per text, request parameters and the sweep plan.

With random weights T3 never emits a sensible end-of-speech token, so every request runs
with ignore_eos and max_new_tokens fixed per text: each request then yields exactly
960 x tokens samples, in both modes and across runs, and figures are comparable.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# (text, nominal speech tokens): the nominal count is about what a real voice takes to say
# it (~2.5 words/s, 25 tokens/s, so ~10 tokens per word), before the preset's scale.
TEXTS: tuple[tuple[str, int], ...] = (
    ("Hello there.", 25),
    ("The quick brown fox jumps over the lazy dog.", 90),
    ("Streaming speech synthesis starts playing audio before the whole sentence has been generated, "
     "which hides most of the model's latency.", 200),
    ("Chatterbox turns text into speech tokens with a language model, speech tokens into mel frames with a "
     "flow-matching decoder, and mel frames into a waveform with a HiFiGAN vocoder; each of the three runs "
     "in its own process here, so all three can work at once.", 400),
)
MIN_TOKENS = 8  # below two 4-token chunks there is nothing to stream

# Per preset: scale of the nominal token counts, measured repetitions and warm-up requests,
# sized so a full run fits in minutes on a 2-core CPU (small decodes ~80 ms/token on 1 thread).
PRESET_DEFAULTS = {
    "tiny": {"token_scale": 1.0, "reps": 2, "warmup": 2},
    "small": {"token_scale": 0.25, "reps": 1, "warmup": 1},  # 8..100 tokens per text
    "chatterbox": {"token_scale": 0.25, "reps": 1, "warmup": 1},
}

# The sweeps; each varies one knob around the baseline (first chunk 4, 10 steps, 1 client).
SWEEPS = {
    "first_chunk_tokens": (1, 2, 4, 8, 16, 25),
    "n_timesteps": (2, 4, 6, 10),
    "concurrency": (1, 2, 4, 8),
}
BASELINE = {"first_chunk_tokens": 4, "n_timesteps": 10, "concurrency": 1}  # the engine's defaults, one client


@dataclass(frozen=True)
class Workload:
    preset: str = "tiny"
    seed: int = 1234  # request seed i is seed + text index: same noise in both modes and across runs
    token_scale: float = 1.0
    tokens: int | None = None  # every text this many tokens (overrides the scale)
    reps: int = 3  # measured passes over the texts per cell and mode
    warmup: int = 2  # requests per mode before any measurement (excluded)
    texts: tuple[tuple[str, int], ...] = TEXTS
    text_ids: tuple[int, ...] | None = None  # subset of texts; None = all
    extra: tuple[tuple[str, object], ...] = ()  # request parameters added to every request (--param)
    fill: bool = False  # a pass runs max(texts, concurrency) requests (texts cycled), so every client has work

    def pass_ids(self, concurrency: int) -> list[int]:
        """The text ids of one pass at `concurrency` clients."""
        ids = self.selected()
        if not self.fill:
            return ids
        return [ids[k % len(ids)] for k in range(max(len(ids), concurrency))]

    def selected(self) -> list[int]:
        return list(self.text_ids) if self.text_ids is not None else list(range(len(self.texts)))

    def tokens_for(self, i: int) -> int:
        if self.tokens is not None:
            return self.tokens
        return max(MIN_TOKENS, round(self.texts[i][1] * self.token_scale))

    def params(self, i: int, knobs: dict) -> dict:
        """The request parameters of text i in a cell (concurrency is the harness's, not the request's)."""
        p = {"seed": self.seed + i, "ignore_eos": True, "max_new_tokens": self.tokens_for(i)}
        p.update(dict(self.extra))
        p.update({k: v for k, v in knobs.items() if k != "concurrency"})
        return p

    def requests(self) -> list[int]:
        """The text ids of one cell's measured requests, in submission order."""
        return self.selected() * self.reps

    def describe(self) -> dict:
        d = asdict(self)
        d["texts"] = [{"id": i, "text": self.texts[i][0], "tokens": self.tokens_for(i),
                       "audio_s": self.tokens_for(i) * 0.04} for i in self.selected()]
        return d


@dataclass(frozen=True)
class Cell:
    """One point of the plan: a sweep's knob at one value, the others at the baseline."""

    sweep: str
    knobs: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return tuple(sorted(self.knobs.items()))


def plan(sweeps: dict[str, tuple]) -> list[Cell]:
    """The cells of the chosen sweeps; a cell equal to the baseline is run once and shared."""
    cells, seen = [], {}
    for name, values in sweeps.items():
        for v in values:
            cell = Cell(name, {**BASELINE, name: v})
            if cell.key in seen:
                continue
            seen[cell.key] = cell
            cells.append(cell)
    return cells
