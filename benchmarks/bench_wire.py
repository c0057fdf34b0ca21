"""Wire benchmark: encode+send+receive+decode time per message over ipc:// (header-only and 1 MiB tensor).

Usage: python benchmarks/bench_wire.py [--n 2000] [--transport ipc|tcp]
Prints a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import zmq  # noqa: E402

from ipc.selfcheck import time_round_trips  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="messages per case (after warm-up)")
    ap.add_argument("--transport", default="ipc", choices=["ipc", "tcp"])
    args = ap.parse_args()
    print(f"Wire round trip, {args.transport}://, one process, {os.cpu_count()} CPU(s), "
          f"Python {platform.python_version()}, pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})\n")
    print("| message | n | median | mean | p90 |")
    print("|---|---|---|---|---|")
    for size, label in ((0, "header only (1 frame)"), (1 << 20, "1 MiB float32 tensor (2 frames)")):
        t = time_round_trips(size, args.n if size == 0 else max(200, args.n // 5), args.transport)
        print(f"| {label} | {t['n']} | {t['median_s'] * 1e6:.1f} us | {t['mean_s'] * 1e6:.1f} us | {t['p90_s'] * 1e6:.1f} us |")


if __name__ == "__main__":
    main()
