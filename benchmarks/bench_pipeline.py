"""Pipeline benchmark: time to first audio, RTF, playback underrun and stage/wire time, pipelined vs sequential.

Usage: python benchmarks/bench_pipeline.py [--preset tiny|small|chatterbox] [--sweeps first-chunk,steps,concurrency] ...
(`--help` lists every option; `tts-pipeline bench` is the same command). Writes
benchmarks/results/pipeline-<date>-<device>-<preset>.{json,md} and PNGs; prints the markdown on stdout.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness.main import main  # noqa: E402

if __name__ == "__main__":  # the pipeline spawns its stages: they re-import this file and must not re-run it
    main()
