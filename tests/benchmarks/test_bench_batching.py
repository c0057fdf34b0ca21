"""The stage batching benchmark runs end to end on the tiny model and writes its table."""
from benchmarks.bench_batching import main


def test_batching_benchmark_writes_both_stages(tmp_path):
    out = tmp_path / "batching.md"
    main(["--preset", "tiny", "--concurrency", "1", "2", "--tokens", "8", "--reps", "1", "--out", str(out)])
    md = out.read_text()
    for stage in ("cfm", "hifigan"):
        for c in (1, 2):
            assert f"| {stage} | {c} |" in md
    assert "Load average" in md and "encoder share" in md
