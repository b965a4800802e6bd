"""Prometheus metrics of every process, and their exposition (`/metrics`).

The gateway serves them on its HTTP port, each worker on WORKER_HEALTH_PORT beside its probes. A prefork
worker's tasks run in child processes: ``repotalk worker`` then sets PROMETHEUS_MULTIPROC_DIR before this
module is imported, and the scrape sums what every child wrote (exemplars are a single-process feature).

Latency histograms carry the trace id of the span they were measured in as an exemplar, which is what
lets a Grafana latency panel open the trace in Jaeger. Labels never hold personal data.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from libs.common import telemetry

log = logging.getLogger(__name__)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# Webhook acks are milliseconds; turns are seconds (a model call can take tens of them).
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MESSAGES_RECEIVED = Counter(
    "repotalk_messages_received", "Inbound WhatsApp messages, by what the webhook did with them", ["disposition"])
MESSAGES_ANSWERED = Counter(
    "repotalk_messages_answered", "Replies delivered (every chunk accepted by Twilio or the sandbox)", ["kind"])
MESSAGES_FAILED = Counter(
    "repotalk_messages_failed", "Turns that failed (message.failed), by the stage that failed", ["stage"])
RATE_LIMITED = Counter("repotalk_rate_limited", "Inbound messages refused by the per-user rate limit")
WEBHOOK_ACK = Histogram(
    "repotalk_webhook_ack_seconds", "Inbound webhook: request read to response (Twilio waits for it)",
    buckets=ACK_BUCKETS)
TURN_LATENCY = Histogram(
    "repotalk_turn_seconds", "End to end: inbound message stored to the reply's first chunk accepted",
    ["kind"], buckets=TURN_BUCKETS)
EVENT_HOP = Histogram(
    "repotalk_event_hop_seconds", "An event's occurred_at to the end of its handling, per consuming service",
    ["service", "event_type"], buckets=FAST_BUCKETS)
EVENTS_HANDLED = Counter(
    "repotalk_events_handled", "Events handled by a service's worker", ["service", "event_type", "outcome"])
SEARCH_LATENCY = Histogram(
    "repotalk_search_seconds", "Search time in code_search, by kind (question or pattern)", ["kind"],
    buckets=FAST_BUCKETS)
SEARCHES = Counter("repotalk_searches", "Searches, by kind and outcome (hits, empty, error)", ["kind", "outcome"])
SEARCH_HITS = Histogram("repotalk_search_hits", "Hits returned per search", buckets=(0, 1, 2, 4, 8, 16, 32))
PROVIDER_CALLS = Counter(
    "repotalk_ai_provider_calls", "Model provider calls (each retry and fallback is one)", ["provider", "model"])
PROVIDER_ERRORS = Counter(
    "repotalk_ai_provider_errors", "Failed model provider calls, by reason", ["provider", "reason"])
PROVIDER_LATENCY = Histogram(
    "repotalk_ai_provider_seconds", "Model provider call latency", ["provider"], buckets=TURN_BUCKETS)
PROVIDER_TOKENS = Counter(
    "repotalk_ai_tokens", "Tokens billed by model providers", ["provider", "model", "direction"])
PROVIDER_COST = Counter("repotalk_ai_cost_usd", "Model spend in US dollars", ["provider", "model"])
ANSWERS = Counter("repotalk_ai_answers", "Answers composed, by answerer (a provider or offline)", ["answerer"])
TWILIO_SENDS = Counter("repotalk_twilio_sends", "Reply chunks sent, by channel and outcome", ["channel", "outcome"])
TWILIO_SEND_LATENCY = Histogram(
    "repotalk_twilio_send_seconds", "One chunk's send, retries included", buckets=FAST_BUCKETS)


# A bucket keeps one exemplar, its latest, which Prometheus reads at each scrape (every 15 s by default): setting one
# on every observation of a traced turn (the client validates its labels, stamps and locks it) was work thrown away
# for all but the last before a scrape. One a second per bucket still gives every bucket a recent traced example.
EXEMPLAR_EVERY = 1.0
_monotonic = time.monotonic
_exemplar_due: weakref.WeakKeyDictionary[Any, list[float]] = weakref.WeakKeyDictionary()


def observe(histogram: Any, seconds: float) -> None:
    """``histogram.observe`` with the current trace as exemplar, when one is being recorded and the bucket's last
    exemplar is a second old or more."""
    ids = (telemetry.current_ids() if not MULTIPROCESS and telemetry.in_sampled_trace()
           and _exemplar_wanted(histogram, seconds) else None)
    if ids is None:
        histogram.observe(seconds)
    else:
        histogram.observe(seconds, exemplar={"trace_id": ids[0]})


def _exemplar_wanted(histogram: Any, seconds: float) -> bool:
    bounds = histogram._upper_bounds  # the child's bucket bounds, +Inf last: the client keeps them there
    due = _exemplar_due.get(histogram)
    if due is None:
        due = _exemplar_due[histogram] = [0.0] * len(bounds)
    bucket = bisect_left(bounds, seconds)  # the client's bucket: the first bound the value is not above
    now = _monotonic()
    if now < due[bucket]:
        return False
    due[bucket] = now + EXEMPLAR_EVERY
    return True


def record_hop(service: str, event_type: str, occurred_at: datetime, ok: bool) -> None:
    """A bus event handled by ``service``: its age since it occurred, and the outcome."""
    age = max(0.0, (datetime.now(UTC) - occurred_at).total_seconds())
    observe(EVENT_HOP.labels(service, event_type), age)
    EVENTS_HANDLED.labels(service, event_type, "ok" if ok else "error").inc()


class QueueDepthCollector(Collector):
    """LLEN of every service queue on the Redis broker, read when scraped (a gauge no one has to update).

    kombu keeps a queue's messages in one list per priority step; their sum is the queue's depth."""

    PRIORITY_SEPARATOR = "\x06\x16"
    PRIORITY_STEPS = (0, 3, 6, 9)

    def __init__(self, broker_url: str, prefix: str, queues: Sequence[str]) -> None:
        self.broker_url = broker_url
        self.prefix = prefix
        self.queues = list(queues)
        self._client: Any = None

    def _keys(self, queue: str) -> list[str]:
        return [self.prefix + queue if step == 0 else f"{self.prefix}{queue}{self.PRIORITY_SEPARATOR}{step}"
                for step in self.PRIORITY_STEPS]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("repotalk_queue_depth", "Events waiting in a service's broker queue",
                                   labels=["queue"])
        if not self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            yield family
            return
        try:
            import redis

            if self._client is None:
                self._client = telemetry.instrument_redis(
                    redis.Redis.from_url(self.broker_url, socket_timeout=1, socket_connect_timeout=1))
            pipe = self._client.pipeline(transaction=False)
            for queue in self.queues:
                for key in self._keys(queue):
                    pipe.llen(key)
            lengths = pipe.execute()
        except Exception as exc:
            log.warning("metrics: queue depth unavailable (%s)", type(exc).__name__)
            yield family
            return
        steps = len(self.PRIORITY_STEPS)
        for i, queue in enumerate(self.queues):
            family.add_metric([queue], float(sum(lengths[i * steps:(i + 1) * steps])))
        yield family


class CallbackGauge(Collector):
    """A gauge whose value a function gives at scrape time (the outbox backlog: a COUNT in the database)."""

    def __init__(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        self.name = name
        self.documentation = documentation
        self.value = value

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation)
        try:
            family.add_metric([], float(self.value()))
        except Exception as exc:
            log.warning("metrics: %s unavailable (%s)", self.name, type(exc).__name__)
            return
        yield family


_extra: dict[str, Collector] = {}


def register(key: str, collector: Collector) -> None:
    """Add a scrape-time collector once per process (a second call with the same key is ignored)."""
    if key in _extra:
        return
    _extra[key] = collector
    if not MULTIPROCESS:
        REGISTRY.register(collector)


def register_queue_depth() -> None:
    from libs.common.events import Service
    from libs.common.settings import get_settings

    broker = get_settings().broker
    register("queue_depth", QueueDepthCollector(broker.url, broker.key_prefix, [s.value for s in Service]))


def _registry() -> CollectorRegistry:
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for collector in _extra.values():
        registry.register(collector)
    return registry


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and content type: OpenMetrics (with exemplars) when the scraper asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_registry()), content_type


def process_died(pid: int) -> None:
    """A prefork child exited: its live gauges no longer count (counters and histograms stay)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def elapsed_since(started: float) -> float:
    return time.perf_counter() - started
