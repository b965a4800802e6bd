"""Metrics: queue depths read from Redis at scrape time, exemplars carry the trace id, and a worker's probe
server serves /metrics."""

from __future__ import annotations

import httpx
import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from libs.common import metrics
from libs.common.health import serve_probes
from tests.conftest import REDIS_URL
from tests.e2e.support import free_port


def test_queue_depth_sums_a_queues_priority_lists(redis_prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.lpush(f"{redis_prefix}processor", "a", "b")
    client.lpush(f"{redis_prefix}processor\x06\x163", "c")
    client.lpush(f"{redis_prefix}ai_engine", "d")
    collector = metrics.QueueDepthCollector(REDIS_URL, redis_prefix, ["processor", "ai_engine", "analytics"])
    [family] = list(collector.collect())
    depths = {sample.labels["queue"]: sample.value for sample in family.samples}
    assert depths == {"processor": 3.0, "ai_engine": 1.0, "analytics": 0.0}


def test_an_unreachable_broker_gives_no_depth_and_no_error() -> None:
    collector = metrics.QueueDepthCollector(f"redis://127.0.0.1:{free_port()}/0", "", ["processor"])
    [family] = list(collector.collect())
    assert family.samples == []


def test_a_histogram_observed_in_a_trace_carries_its_id_as_exemplar() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "test", registry=registry, buckets=(0.1, 1.0))
    tracer = TracerProvider().get_tracer("test")
    metrics.observe(histogram, 0.05)  # outside any trace: no exemplar
    with tracer.start_as_current_span("turn") as span:
        metrics.observe(histogram, 0.5)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    text = openmetrics(registry).decode()
    assert f'# {{trace_id="{trace_id}"}} 0.5' in text
    assert text.count("trace_id=") == 1
    assert trace.get_current_span().get_span_context().is_valid is False


def test_a_bucket_gets_an_exemplar_at_most_once_a_second_and_each_bucket_its_own(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(metrics, "_monotonic", lambda: now[0])
    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "test", ["kind"], registry=registry, buckets=(0.1, 1.0)).labels("a")
    tracer = TracerProvider().get_tracer("test")

    def traced(seconds: float) -> str:
        with tracer.start_as_current_span("turn") as span:
            metrics.observe(histogram, seconds)
            return f"{span.get_span_context().trace_id:032x}"

    first = traced(0.5)
    second = traced(0.6)  # the same bucket within the second: counted, no new exemplar
    slow = traced(5.0)  # another bucket (+Inf): its own
    edge = traced(0.1)  # on a bound: that bucket, as the client counts it
    text = openmetrics(registry).decode()
    assert f'trace_id="{first}"' in text and f'trace_id="{second}"' not in text
    assert f'trace_id="{slow}"' in text and f'trace_id="{edge}"' in text
    assert 't_seconds_count{kind="a"} 4.0' in text
    now[0] += metrics.EXEMPLAR_EVERY
    later = traced(0.7)  # a second on: the bucket's exemplar is this turn's
    text = openmetrics(registry).decode()
    assert f'trace_id="{later}"' in text and f'trace_id="{first}"' not in text


def test_a_worker_probe_server_serves_metrics() -> None:
    port = free_port()
    server = serve_probes("127.0.0.1", port)
    try:
        metrics.EVENTS_HANDLED.labels("processor", "message.received", "ok").inc()
        plain = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/plain")
        assert 'repotalk_events_handled_total{event_type="message.received",outcome="ok",service="processor"}' \
            in plain.text
        assert "repotalk_queue_depth" in plain.text
        om = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Accept": "application/openmetrics-text"},
                       timeout=5)
        assert om.headers["content-type"].startswith("application/openmetrics-text") and om.text.endswith("# EOF\n")
    finally:
        server.shutdown()
