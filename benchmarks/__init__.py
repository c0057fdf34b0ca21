"""Benchmark scripts and their harness (a regular package: the pysbd wheel installs a top-level `benchmarks` package into site-packages, which would otherwise shadow this one)."""
