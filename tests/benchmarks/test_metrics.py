"""The harness's arithmetic on hand-made numbers: percentiles, RTF, the playback-underrun simulation, aggregates."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.harness.metrics import (RequestRecord, percentile, playback, request_metrics, rtf, stage_metrics,
                                        summarize, summarize_records, throughput)

SR = 24_000


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 100))
@settings(max_examples=200, deadline=None)
def test_percentile_matches_numpy_linear(xs, q):
    assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-9, abs=1e-6)


def test_percentile_edges():
    assert math.isnan(percentile([], 50))
    assert percentile([3.0], 99) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1, 2, 3, 4, 5], 90) == pytest.approx(4.6)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_ignores_nan_and_inf():
    s = summarize([1.0, 2.0, 3.0, float("nan"), float("inf")])
    assert s["n"] == 3 and s["mean"] == 2.0 and s["p50"] == 2.0 and s["min"] == 1.0 and s["max"] == 3.0
    assert set(s) == {"n", "mean", "p50", "p90", "p95", "p99", "min", "max"}
    assert math.isnan(summarize([])["mean"])


def test_rtf():
    assert rtf(1.0, 4.0) == 0.25
    assert rtf(3.0, 2.0) == 1.5
    assert rtf(1.0, 0.0) == math.inf


def test_playback_no_underrun_when_each_chunk_arrives_before_the_previous_ends():
    # 1 s chunks arriving at 0, 0.5, 1.9: the player is busy until 1, 2, 3
    assert playback([0.0, 0.5, 1.9], [1.0, 1.0, 1.0]) == []


def test_playback_bursty_arrival_stalls_even_when_faster_than_real_time():
    # 3 s of audio in 2 s (RTF < 1) but the second chunk comes 0.5 s after the first ran out
    stalls = playback([0.0, 0.6, 1.0], [0.1, 1.4, 1.5])
    assert len(stalls) == 1
    start, length = stalls[0]
    assert start == pytest.approx(0.1) and length == pytest.approx(0.5)


def test_playback_stall_shifts_the_rest_of_the_playout():
    # after a 1 s stall at t=1 the player ends chunk 2 at 3, so a chunk at 2.5 plays without a stall,
    # and one at 4.5 stalls 1.5 s (from 3.0), not 2.5 s (from 2.0)
    stalls = playback([0.0, 2.0, 2.5, 4.5], [1.0, 0.5, 0.5, 1.0])
    assert [(round(s, 6), round(d, 6)) for s, d in stalls] == [(1.0, 1.0), (3.0, 1.5)]


def test_playback_checks_lengths():
    with pytest.raises(ValueError):
        playback([0.0], [1.0, 2.0])
    assert playback([], []) == []


def record(arrivals, samples, stats=None, submit=100.0):
    return RequestRecord("pipelined", 0, 10, submit, list(arrivals), list(samples), stats or {})


def test_request_metrics_on_a_hand_made_request():
    # chunks of 0.1, 0.4, 0.5 s audio arriving 0.2, 0.6, 0.8 s after submission
    r = record([0.2, 0.6, 0.8], [2400, 9600, 12000], {"busy_s.t3": 0.3, "wire_s.t3": 0.003,
                                                      "busy_s.cfm": 0.1, "wire_s.cfm": 0.005})
    m = request_metrics(r)
    assert m["ttfb_s"] == 0.2 and m["e2e_s"] == 0.8 and m["chunks"] == 3
    assert m["audio_s"] == pytest.approx(1.0)
    assert m["rtf"] == pytest.approx(0.8)
    assert m["underrun_max_s"] == pytest.approx(0.3)  # first chunk ends at 0.3, the next comes at 0.6
    assert m["underrun_total_s"] == pytest.approx(0.3) and m["underruns"] == 1
    assert m["steady_chunks_per_s"] == pytest.approx(2 / 0.6)
    assert m["steady_audio_x"] == pytest.approx(0.9 / 0.6)
    assert m["wire_frac"] == pytest.approx(0.008 / 0.4)


def test_request_metrics_without_audio_and_without_stats():
    m = request_metrics(record([], []))
    assert m["chunks"] == 0 and math.isnan(m["ttfb_s"]) and m["rtf"] == math.inf
    assert math.isnan(stage_metrics({})["wire_frac"])
    one = request_metrics(record([0.5], [24000]))
    assert one["underrun_max_s"] == 0.0 and math.isnan(one["steady_chunks_per_s"])


def test_throughput_spans_first_submission_to_last_arrival():
    a = record([0.5, 1.0], [SR, SR], submit=10.0)  # 2 s of audio, done at 11.0
    b = record([1.0, 3.0], [SR, SR], submit=10.5)  # 2 s of audio, done at 13.5
    assert throughput([a, b]) == pytest.approx(4.0 / 3.5)
    assert math.isnan(throughput([record([], [])]))


def test_summarize_records_has_every_aggregate_and_per_stage_wire_fraction():
    rs = [record([0.1, 0.2], [SR, SR], {"busy_s.cfm": 1.0, "wire_s.cfm": 0.01}),
          record([0.3, 0.4], [SR, SR], {"busy_s.cfm": 3.0, "wire_s.cfm": 0.01})]
    s = summarize_records(rs)
    assert s["ttfb_s"]["mean"] == pytest.approx(0.2)
    assert s["wire_frac.cfm"] == pytest.approx(0.02 / 4.0)
    assert s["busy_s.cfm"]["p50"] == pytest.approx(2.0)
    assert s["throughput_x"] > 0
