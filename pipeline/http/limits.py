"""The server's own limits: the request body size (enforced by FastAPI) and the number of synthesis streams.

The stream limit is the HTTP layer's guard, not the pipeline's admission control: each
stream holds a thread and its encoded audio, so the server bounds them even when the
pipeline takes everything (today) or is remote. Keep it at or above the pipeline's own
limit (--max-inflight + --max-queue) so that the pipeline decides who waits; both limits
answer 503 with Retry-After.
"""
from __future__ import annotations

MAX_BODY_BYTES = 64 * 1024  # a 4096-character input is at most 16 KiB of UTF-8; the knobs are a few hundred bytes
DEFAULT_MAX_STREAMS = 64  # synthesis streams at once (HTTP and WebSocket requests together)


class Slots:
    """At most `limit` synthesis streams; used from the event loop only (no lock needed)."""

    def __init__(self, limit: int = DEFAULT_MAX_STREAMS):
        if limit < 1:
            raise ValueError(f"max streams must be >= 1, got {limit}")
        self.limit, self.used = limit, 0

    def try_acquire(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def release(self) -> None:
        self.used -= 1
