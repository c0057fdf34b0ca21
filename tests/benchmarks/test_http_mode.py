"""The harness's http mode for a few seconds on the tiny model: TTFB at the HTTP client beside the in-process API's."""
import json

from benchmarks.harness.main import main


def test_http_mode_reports_the_overhead_against_the_api(tmp_path):
    main(["--preset", "tiny", "--modes", "pipelined,http", "--sweeps", "concurrency", "--concurrency", "3",
          "--fill-concurrency", "--texts", "0", "--tokens", "8", "--reps", "1", "--warmup", "0",
          "--param", "n_timesteps=2", "--out-dir", str(tmp_path), "--name", "http", "--no-plots"])
    doc = json.loads((tmp_path / "http.json").read_text())
    by_c = {c["concurrency"]: c for c in doc["cells"]}
    assert set(by_c) == {3}
    for c, cell in by_c.items():
        assert set(cell["modes"]) == {"pipelined", "http"}
        for mode in cell["modes"].values():  # --fill-concurrency: c requests per pass, each exactly 8 tokens
            assert [sum(r["samples"]) for r in mode["requests"]] == [8 * 960] * c
            assert all(r["arrivals_s"][0] > 0 for r in mode["requests"])
        assert {"ttfb_s.p50.diff_ms", "ttfb_s.p95.diff_ms", "e2e_s.p50.diff_ms", "throughput_x.ratio"} <= \
            set(cell["http_overhead"])
    md = (tmp_path / "http.md").read_text()
    assert "## HTTP overhead" in md and "| concurrency=3 |" in md
