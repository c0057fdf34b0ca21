"""Pictures of a run: a chunk-arrival timeline per mode and TTFB against first-chunk size (matplotlib, lazily).

matplotlib is the `bench` extra (pip install -e '.[bench]'); without it the harness still
writes the JSON and markdown and says which pictures it skipped.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.harness.metrics import SAMPLE_RATE, playback
from benchmarks.harness.report import find
from benchmarks.harness.workload import BASELINE


class PlotsUnavailable(RuntimeError):
    pass


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable("matplotlib is not installed: pip install -e '.[bench]' to get the PNGs") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def representative(cell: dict, mode: str) -> dict:
    """The cell's longest request in `mode` (first of its kind): the one with the most chunks to show."""
    reqs = cell["modes"][mode]["requests"]
    longest = max(r["tokens"] for r in reqs)
    return next(r for r in reqs if r["tokens"] == longest)


def timeline(req: dict, title: str, path: Path) -> Path:
    """Audio delivered (steps at each arrival) against audio played by a real-time player started at the first chunk."""
    plt = _plt()
    arr = req["arrivals_s"]
    durs = [n / SAMPLE_RATE for n in req["samples"]]
    stalls = playback(arr, durs)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    delivered, total = [0.0], 0.0
    for d in durs:
        total += d
        delivered.append(total)
    ax.step([0.0, *arr], delivered, where="post", label="audio received (s)", color="tab:blue")
    ax.plot(arr, delivered[1:], "o", ms=3, color="tab:blue")
    # the player's position: slope 1 while playing, flat while stalled
    xs, ys, clock, pos = [arr[0]], [0.0], arr[0], 0.0
    for t, d in zip(arr, durs):
        if t > clock:
            xs.append(t), ys.append(pos)
            clock = t
        clock, pos = clock + d, pos + d
        xs.append(clock), ys.append(pos)
    ax.plot(xs, ys, color="tab:green", label="audio played (real-time player)")
    ax.plot([arr[0], arr[0] + total], [0, total], ":", color="grey", label="real time from first chunk")
    for k, (start, length) in enumerate(stalls):
        ax.axvspan(start, start + length, color="tab:red", alpha=0.25, label="underrun" if k == 0 else None)
    ax.axvline(arr[0], color="tab:orange", lw=1, label=f"first audio {arr[0] * 1000:.0f} ms")
    ax.set_xlabel("seconds since submission")
    ax.set_ylabel("seconds of audio")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ttfb_plot(cells: list[dict], values, title: str, path: Path) -> Path | None:
    """TTFB p50 (markers) and min..p90 (bars) per mode against the first chunk's token count."""
    plt = _plt()
    points = [(v, find(cells, "first_chunk_tokens", v)) for v in values]
    points = [(v, c) for v, c in points if c]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for mode in points[0][1]["modes"]:
        xs = [v for v, _ in points]
        s = [c["modes"][mode]["summary"]["ttfb_s"] for _, c in points]
        mid = [x["p50"] * 1000 for x in s]
        lo = [(x["p50"] - x["min"]) * 1000 for x in s]
        hi = [(x["p90"] - x["p50"]) * 1000 for x in s]
        ax.errorbar(xs, mid, yerr=[lo, hi], marker="o", capsize=3, label=f"{mode} (p50, bars min..p90)")
    ax.set_xlabel("first chunk (speech tokens; 1 token = 40 ms)")
    ax.set_ylabel("time to first audio (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(doc: dict, stem: Path, first_chunk_values) -> list[Path]:
    """Every picture of the run, named after `stem`; returns the files written."""
    cells, meta = doc["cells"], doc["meta"]
    out = []
    base = find(cells, "first_chunk_tokens", BASELINE["first_chunk_tokens"]) or (cells[0] if cells else None)
    if base:
        for mode in base["modes"]:
            req = representative(base, mode)
            title = (f"{mode}, preset {meta['preset']}, {req['tokens']} tokens, first chunk "
                     f"{base['knobs'].get('first_chunk_tokens')} tokens ({meta['device']}, {meta['date'][:10]})")
            out.append(timeline(req, title, stem.with_name(f"{stem.name}-timeline-{mode}.png")))
    p = ttfb_plot(cells, first_chunk_values, f"TTFB vs first chunk, preset {meta['preset']} ({meta['device']})",
                  stem.with_name(f"{stem.name}-ttfb.png"))
    if p:
        out.append(p)
    return out
