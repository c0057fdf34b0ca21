"""Prometheus metrics of the HTTP server (`GET /metrics`), in a registry of its own per app.

The request figures are observed by the server as it sends; the pipeline's state
(readiness, stages, active and queued requests) is read from the backend at each scrape.
Names and meanings are listed in docs/http.md.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Bucket edges, in seconds (TTFB: ~30 ms on a GPU to seconds on a loaded CPU) and in RTF units.
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CHUNK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RTF_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0)


class PipelineCollector:
    """The backend's status, read at scrape time."""

    def __init__(self, status: Callable):
        self.status = status

    def collect(self):
        st = self.status()
        ready = GaugeMetricFamily("tts_pipeline_ready", "1 when every stage is up and requests are taken")
        ready.add_metric([], 1.0 if st.ready else 0.0)
        yield ready
        if st.stages:
            up = GaugeMetricFamily("tts_stage_up", "1 while the stage process is alive", labels=["stage"])
            restarts = CounterMetricFamily("tts_stage_restarts", "Times the stage process was restarted", labels=["stage"])
            for name, s in st.stages.items():
                up.add_metric([name], 1.0 if s.alive else 0.0)
                restarts.add_metric([name], float(s.restarts))
            yield up
            yield restarts
        if st.active is not None:
            reqs = GaugeMetricFamily("tts_pipeline_requests", "Requests the pipeline holds, by state", labels=["state"])
            reqs.add_metric(["active"], float(st.active - (st.queued or 0)))
            if st.queued is not None:
                reqs.add_metric(["queued"], float(st.queued))
            yield reqs


class Metrics:
    def __init__(self, status: Callable):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("tts_requests", "Finished HTTP and WebSocket synthesis requests, by outcome",
                                ["endpoint", "outcome"], registry=r)
        self.ttfb = Histogram("tts_ttfb_seconds", "Request received -> first audio bytes handed to the connection",
                              ["endpoint"], buckets=TTFB_BUCKETS, registry=r)
        self.chunk_interval = Histogram("tts_chunk_interval_seconds", "Time between consecutive audio chunks of a request",
                                        ["endpoint"], buckets=CHUNK_BUCKETS, registry=r)
        self.rtf = Histogram("tts_rtf", "Real-time factor of finished requests: wall time / audio duration",
                             ["endpoint"], buckets=RTF_BUCKETS, registry=r)
        self.audio_seconds = Counter("tts_audio_seconds", "Seconds of audio delivered by finished requests",
                                     ["endpoint"], registry=r)
        self.engine_ends = Counter("tts_engine_requests", "Requests as the engine ended them: completed (its end message), "
                                   "cancelled (the cancel came back through every stage), failed", ["end"], registry=r)
        self.streams = Gauge("tts_http_streams", "Synthesis requests this server is running now", registry=r)
        self.stage_busy = Counter("tts_stage_busy_seconds", "Compute time per stage, summed over finished requests",
                                  ["stage"], registry=r)
        r.register(PipelineCollector(status))

    def observe_stage_stats(self, stats: dict[str, float]) -> None:
        """The end message's per-stage figures ("busy_s.t3": seconds) into tts_stage_busy_seconds."""
        for key, value in stats.items():
            if key.startswith("busy_s.") and value >= 0:
                self.stage_busy.labels(key.split(".", 1)[1]).inc(value)
