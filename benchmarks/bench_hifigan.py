"""HiFT vocoder benchmark: wall time of HiFT.inference (f0 + source + decode) for 1 s and 5 s of audio.

Usage: python benchmarks/bench_hifigan.py [--presets tiny,small,chatterbox] [--repeats 5] [--threads N]
Random built-in weights (speed does not depend on the values). Prints a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from stages.hifigan import HiFTConfig, build_builtin_hift  # noqa: E402

FRAMES_PER_SECOND = 50  # mel frames per second of 24 kHz audio
SECONDS = (1, 5)  # audio lengths timed


def time_inference(model, frames: int, repeats: int) -> list[float]:
    mel = torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        model.inference(mel, torch.Generator().manual_seed(0))  # warm-up (allocator, oneDNN kernels)
        for i in range(repeats):
            t0 = time.perf_counter()
            model.inference(mel, torch.Generator().manual_seed(i))
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", default="tiny,small,chatterbox")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"HiFT.inference, fp32 CPU, {os.cpu_count()} CPU(s), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}, {platform.processor() or platform.machine()}\n")
    print("| preset | params | audio | median | min | real-time factor (median / audio) |")
    print("|---|---|---|---|---|---|")
    for name in args.presets.split(","):
        model = build_builtin_hift(HiFTConfig.from_name(name))
        n_params = sum(p.numel() for p in model.parameters())
        for sec in SECONDS:
            t = time_inference(model, sec * FRAMES_PER_SECOND, args.repeats)
            med = statistics.median(t)
            print(f"| {name} | {n_params / 1e6:.2f} M | {sec} s | {med * 1e3:.1f} ms | {min(t) * 1e3:.1f} ms | {med / sec:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
