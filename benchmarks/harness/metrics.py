"""The harness's arithmetic: per-request metrics from consumer-side arrival times, and their aggregates.

Pure functions over plain numbers (no torch, no sockets), so tests can check them on
hand-made arrival times. Every time here is in seconds on one clock (time.perf_counter
in the consuming process), relative to the request's submission.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

SAMPLE_RATE = 24_000  # Hz, every Chatterbox model's output rate
PERCENTILES = (50, 90, 95, 99)  # the aggregates, beside the mean

DEFINITIONS = {
    "ttfb_s": "time to first audio: submission -> first audio chunk received by the consumer",
    "e2e_s": "end-to-end latency: submission -> last audio chunk received",
    "audio_s": "audio duration: samples received / 24000",
    "rtf": "real-time factor = generation time / audio duration, generation time = submission -> last chunk "
           "(e2e_s); < 1 is faster than real time; includes queueing when requests wait for each other",
    "underrun_max_s": "worst playback stall of a player that starts at the first chunk and plays in real time, "
                      "waiting (and then resuming) whenever the next chunk has not arrived",
    "underrun_total_s": "sum of that player's stalls",
    "steady_chunks_per_s": "chunks after the first / (last arrival - first arrival): the steady-state chunk rate",
    "steady_audio_x": "audio after the first chunk / (last arrival - first arrival): audio seconds delivered per "
                      "wall second once streaming has started",
    "wire_frac": "sum over stages of time in ZeroMQ + encode/decode / sum over stages of compute time "
                 "(stage-reported, pipelined mode only)",
    "throughput_x": "per cell: audio seconds delivered / wall seconds from first submission to last chunk",
}


@dataclass
class RequestRecord:
    """One measured request as the consumer saw it."""

    mode: str  # "pipelined" | "sequential"
    text_id: int  # index into the workload's texts
    tokens: int  # speech tokens asked for (ignore_eos: exactly this many)
    submit_t: float  # absolute perf_counter at submission (for the cell's wall time)
    arrivals: list[float] = field(default_factory=list)  # seconds after submission, one per chunk
    samples: list[int] = field(default_factory=list)  # samples per chunk, same order
    stats: dict[str, float] = field(default_factory=dict)  # stage busy_s.* / wire_s.* (pipelined only)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method); nan for no values."""
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Iterable[float]) -> dict[str, float]:
    """n, mean, p50/p90/p95/p99, min, max of the finite values."""
    xs = [v for v in values if v is not None and not math.isnan(v) and not math.isinf(v)]
    out = {"n": len(xs), "mean": sum(xs) / len(xs) if xs else math.nan}
    out.update({f"p{q}": percentile(xs, q) for q in PERCENTILES})
    out["min"] = min(xs) if xs else math.nan
    out["max"] = max(xs) if xs else math.nan
    return out


def rtf(generation_s: float, audio_s: float) -> float:
    """Real-time factor: seconds of generation per second of audio (inf for no audio)."""
    return generation_s / audio_s if audio_s > 0 else math.inf


def playback(arrivals: Sequence[float], durations: Sequence[float]) -> list[tuple[float, float]]:
    """Stalls of a real-time player that starts at the first arrival: [(stall start, stall length)].

    The player plays chunk k from max(arrival k, end of chunk k-1); when chunk k arrives
    after the previous one has finished playing, the gap is an underrun.
    """
    if len(arrivals) != len(durations):
        raise ValueError("one duration per arrival")
    stalls = []
    clock = arrivals[0] if arrivals else 0.0  # when the player is ready for the next chunk
    for t, d in zip(arrivals, durations):
        if t > clock:
            stalls.append((clock, t - clock))
            clock = t
        clock += d
    return stalls


def request_metrics(r: RequestRecord, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    """Every per-request figure of DEFINITIONS from one record."""
    durs = [n / sample_rate for n in r.samples]
    audio_s = sum(durs)
    if not r.arrivals:
        return {"ttfb_s": math.nan, "e2e_s": math.nan, "audio_s": 0.0, "rtf": math.inf, "chunks": 0,
                "underrun_max_s": math.nan, "underrun_total_s": math.nan, "underruns": 0,
                "steady_chunks_per_s": math.nan, "steady_audio_x": math.nan}
    first, last = r.arrivals[0], r.arrivals[-1]
    stalls = playback(r.arrivals, durs)
    span = last - first
    out = {
        "ttfb_s": first,
        "e2e_s": last,
        "audio_s": audio_s,
        "rtf": rtf(last, audio_s),
        "chunks": len(r.arrivals),
        "underrun_max_s": max((s for _, s in stalls), default=0.0),
        "underrun_total_s": sum(s for _, s in stalls),
        "underruns": len(stalls),
        "steady_chunks_per_s": (len(r.arrivals) - 1) / span if span > 0 else math.nan,
        "steady_audio_x": (audio_s - durs[0]) / span if span > 0 else math.nan,
    }
    out.update(stage_metrics(r.stats))
    return out


def stage_metrics(stats: dict[str, float]) -> dict[str, float]:
    """busy_s.<stage>, wire_s.<stage> and wire_frac (nan when the stages reported nothing)."""
    busy = {k: v for k, v in stats.items() if k.startswith("busy_s.")}
    wire = {k: v for k, v in stats.items() if k.startswith("wire_s.")}
    out = {**busy, **wire}
    total = sum(busy.values())
    out["wire_frac"] = sum(wire.values()) / total if total > 0 else math.nan
    return out


def throughput(records: Sequence[RequestRecord], sample_rate: int = SAMPLE_RATE) -> float:
    """Audio seconds delivered per wall second, from the first submission to the last arrival of the set."""
    done = [r for r in records if r.arrivals]
    if not done:
        return math.nan
    start = min(r.submit_t for r in records)
    end = max(r.submit_t + r.arrivals[-1] for r in done)
    audio = sum(sum(r.samples) for r in done) / sample_rate
    return audio / (end - start) if end > start else math.nan


SUMMARY_KEYS = ("ttfb_s", "e2e_s", "rtf", "underrun_max_s", "underrun_total_s", "steady_chunks_per_s",
                "steady_audio_x", "audio_s", "chunks", "wire_frac")


def summarize_records(records: Sequence[RequestRecord]) -> dict[str, dict[str, float] | float]:
    """Aggregates of a cell's records in one mode: each metric's summary, stage totals and throughput."""
    per = [request_metrics(r) for r in records]
    out: dict = {k: summarize(m.get(k, math.nan) for m in per) for k in SUMMARY_KEYS}
    stage_keys = sorted({k for m in per for k in m if k.startswith(("busy_s.", "wire_s."))})
    for k in stage_keys:
        out[k] = summarize(m.get(k, math.nan) for m in per)
    for stage in sorted({k.split(".", 1)[1] for k in stage_keys}):
        b = sum(m.get(f"busy_s.{stage}", 0.0) for m in per)
        w = sum(m.get(f"wire_s.{stage}", 0.0) for m in per)
        out[f"wire_frac.{stage}"] = w / b if b > 0 else math.nan
    out["throughput_x"] = throughput(records)
    return out
