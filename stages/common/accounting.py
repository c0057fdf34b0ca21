"""The sample accounting every stage and the coordinator check: 960 samples per valid speech token."""
from __future__ import annotations

SAMPLES_PER_TOKEN = 960  # 2 mel frames x 480 samples at 24 kHz
FRAMES_PER_TOKEN = 2  # 25 Hz tokens -> 50 Hz mel frames


class AccountingError(RuntimeError):
    """A stage emitted a different amount than its input requires: audio would have been lost."""


def check_totals(tokens: int, frames: int, samples: int) -> None:
    """The last stage's check: samples == 960 x valid tokens (and frames == 2 x tokens)."""
    if frames != FRAMES_PER_TOKEN * tokens or samples != SAMPLES_PER_TOKEN * tokens:
        raise AccountingError(f"audio lost: {tokens} tokens gave {frames} mel frames and {samples} samples "
                              f"(expected {FRAMES_PER_TOKEN * tokens} and {SAMPLES_PER_TOKEN * tokens})")
