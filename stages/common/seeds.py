"""Per-stage seeds derived from a request's seed, so every stage draws its own stream reproducibly.

Used by each stage's stream construction (stages/cfm/part.py, stages/hifigan/part.py) in the
stage processes, in the single-process path and in offline synthesis alike: the same seed
gives the same draws everywhere.
"""
from __future__ import annotations

import hashlib

SEED_DOMAINS = ("t3", "cfm", "hifigan")


def derive_seed(seed: int, domain: str) -> int:
    """A 63-bit seed from (request seed, stage domain): stable across machines and Python runs."""
    h = hashlib.blake2b(f"{domain}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)
