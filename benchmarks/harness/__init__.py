"""The pipeline benchmark harness: workload, the two modes, the metrics, the report and the pictures.

Entry points: benchmarks/bench_pipeline.py and `tts-pipeline bench` (both call harness.main.main).
"""
