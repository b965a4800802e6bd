"""Observability of the distributed stack, end to end: the gateway and each worker as separate processes,
tracing into a shared JSON-lines span file, each worker serving /metrics on its own port.

One signed webhook must give one trace whose parent -> child edges run gateway -> processor -> code_search
-> ai_engine -> processor -> gateway, with a span per provider attempt and per Twilio send; every service's
/metrics must count the turn; every PromQL expression of the provisioned dashboards must name a metric a
service exports; and no phone number or message body may appear in a span or a log line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from libs.common.events import Service
from repotalk.client import new_message_sid
from repotalk.stack import HTTP, Stack
from tests.deploy.dashboards import dashboard_metric_names, dashboards
from tests.e2e.support import free_port, post_webhook, wait_until
from tests.e2e.test_distributed import QUESTION, _answers, _prepare, _stack_env
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.twilio_server import FakeTwilio

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

SENDER = "whatsapp:+15550003333"
ANSWER = "Checked in `sample_repo/webhooks/security.py:22` by *verify_twilio_signature*."
TURN = ["gateway", "processor", "code_search", "ai_engine", "processor", "gateway"]

SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _turn_chain(path: Path, message_sid: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """(the chain of spans from the webhook's server span down to the Twilio send, every span of the trace)
    once the whole chain has been exported by every process; None before."""
    spans = _spans(path)
    servers = [s for s in spans if s["kind"] == "SERVER" and s["attributes"].get("repotalk.message_sid") == message_sid]
    if not servers:
        return None
    trace_id = servers[0]["trace_id"]
    in_trace = [s for s in spans if s["trace_id"] == trace_id]
    by_id = {s["span_id"]: s for s in in_trace}
    sends = [s for s in in_trace if s["name"] == "twilio.send_chunk"]
    if not sends:
        return None
    chain = [sends[0]]
    while chain[-1]["parent_span_id"] is not None:
        parent = by_id.get(chain[-1]["parent_span_id"])
        if parent is None:
            return None  # that process has not exported it yet
        chain.append(parent)
    return list(reversed(chain)), in_trace


def _services_along(chain: list[dict[str, Any]]) -> list[str]:
    services: list[str] = []
    for span in chain:
        if not services or services[-1] != span["service"]:
            services.append(span["service"])
    return services


def _scrape(url: str) -> tuple[Samples, set[str]]:
    """A real scrape: {(sample name, labels): value}, and every series name its families declare (a labelled
    counter nobody incremented yet is declared, with no sample)."""
    text = httpx.get(url, timeout=10).text
    samples: Samples = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        families |= {family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",))}
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, families


def _value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def _present(samples: Samples, name: str, **labels: str) -> bool:
    wanted = set(labels.items())
    return any(n == name and wanted <= set(ls) for n, ls in samples)


def _metrics_urls(stack: Stack, ports: dict[str, int]) -> dict[str, str]:
    urls = {HTTP: f"{stack.base_url}/metrics"}
    urls.update({name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()})
    return urls


# What each process must show after one answered turn: (process, sample, labels, lowest value).
EXPECTED: list[tuple[str, str, dict[str, str], float]] = [
    (HTTP, "repotalk_messages_received_total", {"disposition": "accepted"}, 1),
    (HTTP, "repotalk_webhook_ack_seconds_count", {}, 1),
    (HTTP, "repotalk_webhook_ack_seconds_sum", {}, 1e-6),
    (HTTP, "repotalk_outbox_backlog", {}, 0),
    (HTTP, "repotalk_queue_depth", {"queue": "processor"}, 0),
    ("gateway", "repotalk_messages_answered_total", {"kind": "answer"}, 1),
    ("gateway", "repotalk_turn_seconds_count", {"kind": "answer"}, 1),
    ("gateway", "repotalk_turn_seconds_sum", {"kind": "answer"}, 1e-3),
    ("gateway", "repotalk_twilio_sends_total", {"channel": "twilio", "outcome": "sent"}, 1),
    ("gateway", "repotalk_twilio_send_seconds_count", {}, 1),
    ("gateway", "repotalk_event_hop_seconds_count", {"service": "gateway", "event_type": "reply.ready"}, 1),
    ("processor", "repotalk_event_hop_seconds_count", {"service": "processor", "event_type": "message.received"}, 1),
    ("processor", "repotalk_event_hop_seconds_count", {"service": "processor", "event_type": "ai.response"}, 1),
    ("processor", "repotalk_events_handled_total", {"service": "processor", "outcome": "ok"}, 2),
    ("code_search", "repotalk_search_seconds_count", {"kind": "question"}, 1),
    ("code_search", "repotalk_searches_total", {"kind": "question", "outcome": "hits"}, 1),
    ("code_search", "repotalk_search_hits_sum", {}, 1),
    ("ai_engine", "repotalk_ai_provider_calls_total", {"provider": "openai"}, 2),
    ("ai_engine", "repotalk_ai_provider_errors_total", {"provider": "openai"}, 1),
    ("ai_engine", "repotalk_ai_provider_seconds_count", {"provider": "openai"}, 2),
    ("ai_engine", "repotalk_ai_tokens_total", {"provider": "openai", "direction": "input"}, 100),
    ("ai_engine", "repotalk_ai_tokens_total", {"provider": "openai", "direction": "output"}, 20),
    ("ai_engine", "repotalk_ai_cost_usd_total", {"provider": "openai"}, 1e-9),
    ("ai_engine", "repotalk_ai_answers_total", {"answerer": "openai"}, 1),
    ("analytics", "repotalk_event_hop_seconds_count", {"service": "analytics", "event_type": "message.received"}, 1),
]


def test_one_turn_is_one_trace_counted_by_every_service_and_charted_by_the_dashboards(
    base_env: dict[str, str], pg_url: str, redis_prefix: str, twilio: FakeTwilio, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.conftest import REDIS_URL

    span_file = tmp_path / "spans.jsonl"
    ports = {service.value: free_port() for service in Service}
    with FakeOpenAI() as llm:
        llm.error(503, retry_after_ms=1)  # the first attempt fails: a retry must show as a second attempt span
        llm.reply(ANSWER)
        env = {
            **_stack_env(base_env, pg_url, REDIS_URL, redis_prefix, twilio, tmp_path),
            "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": llm.base_url, "AI_BACKOFF_BASE": "0.01",
            "REPOTALK_TRACE_FILE": str(span_file), "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        _prepare(monkeypatch, env)
        process_env = {name: {"WORKER_HEALTH_PORT": str(port)} for name, port in ports.items()}
        with Stack(env=env, run_dir=tmp_path / "run", port=free_port(), process_env=process_env) as stack:
            sid = new_message_sid()
            assert post_webhook(stack.base_url, QUESTION, SENDER, sid, twilio.auth_token).status_code == 200
            wait_until(lambda: _answers(twilio, SENDER), 60, "the answer at fake Twilio")

            # One trace, across the processes, in the order of the turn.
            found = wait_until(lambda: _turn_chain(span_file, sid), 30, "the whole turn's spans")
            chain, in_trace = found
            assert chain[0]["kind"] == "SERVER" and chain[0]["name"] == "POST /webhooks/twilio"
            assert chain[0]["attributes"]["http.method"] == "POST" and chain[0]["attributes"]["http.status_code"] == 200
            # The Twilio send is one client span: no HTTP span beneath it says the same again.
            assert not [s for s in in_trace if s["parent_span_id"] == chain[-1]["span_id"]]
            assert _services_along(chain) == TURN, [(s["service"], s["name"]) for s in chain]
            pids = {(s["service"], s["resource"].get("repotalk.process")) for s in chain}
            assert ("gateway", "http") in pids and ("gateway", "worker") in pids
            consumers = [s["name"] for s in chain if s["kind"] == "CONSUMER"]
            assert consumers == ["run/repotalk.processor.handle", "run/repotalk.code_search.handle",
                                 "run/repotalk.ai_engine.handle", "run/repotalk.processor.handle",
                                 "run/repotalk.gateway.handle"]
            searches = [s for s in in_trace if s["name"] == "code_search.search"]
            assert len(searches) == 1 and searches[0]["attributes"]["repotalk.search.hits"] >= 1
            attempts = sorted((s for s in in_trace if s["name"] == "ai.openai.complete"),
                              key=lambda s: s["attributes"]["repotalk.ai.attempt"])
            assert [(a["attributes"]["repotalk.ai.attempt"], a["status"]) for a in attempts] == [(1, "ERROR"),
                                                                                                (2, "UNSET")]
            assert attempts[1]["attributes"]["gen_ai.usage.input_tokens"] == 100
            assert chain[-1]["attributes"]["repotalk.chunk.count"] >= 1
            assert chain[-1]["attributes"]["repotalk.provider_sid"].startswith("SM")
            assert {s["service"] for s in in_trace} >= {"gateway", "processor", "code_search", "ai_engine"}
            assert any(s["name"].startswith(("SELECT", "INSERT", "UPDATE")) for s in in_trace)  # SQLAlchemy

            # Every service's /metrics counts the turn.
            urls = _metrics_urls(stack, ports)

            def short_of_expected() -> list[str]:
                scraped = {name: _scrape(url)[0] for name, url in urls.items()}
                return [f"{proc}: {name}{labels} below {low}" for proc, name, labels, low in EXPECTED
                        if not _present(scraped[proc], name, **labels)
                        or _value(scraped[proc], name, **labels) < low]

            try:
                wait_until(lambda: not short_of_expected(), 30, "every service's metrics")
            except AssertionError:
                raise AssertionError(f"metrics not as expected: {short_of_expected()}") from None

            # A latency histogram carries the trace as exemplar when scraped as OpenMetrics.
            openmetrics = httpx.get(urls["gateway"], headers={"Accept": "application/openmetrics-text"}).text
            assert "repotalk_turn_seconds_bucket" in openmetrics and '# {trace_id="' in openmetrics

            # The dashboards chart only what the services export.
            exported: set[str] = set()
            for url in urls.values():
                samples, families = _scrape(url)
                exported |= families | {name for name, _ in samples}
            for path, dashboard in dashboards():
                unknown = dashboard_metric_names(dashboard) - exported
                assert not unknown, f"{path.name} charts metrics no service exports: {sorted(unknown)}"

        # No phone number or message body in any span or log line of the run.
        secrets = [SENDER.split("+", 1)[1], SENDER.split("+", 1)[1][1:], QUESTION]
        for span in _spans(span_file):
            text = json.dumps([span["attributes"], span["events"], span["resource"], span["name"]])
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"span {span['name']} of {span['service']} holds {leaked}"
        for log in (tmp_path / "run").glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                assert not [s for s in secrets if s in line], f"{log.name}: {line}"


def test_turns_that_travel_together_are_answered_once_each_and_keep_a_trace_each(
    base_env: dict[str, str], pg_url: str, redis_prefix: str, twilio: FakeTwilio, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Webhooks that arrive together go through the services in shared tasks (bus.coalescing); each turn is still
    answered exactly once and is still one trace through every service, with the consumer spans it would have had
    alone."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import REDIS_URL

    span_file = tmp_path / "spans.jsonl"
    env = {**_stack_env(base_env, pg_url, REDIS_URL, redis_prefix, twilio, tmp_path),
           "REPOTALK_TRACE_FILE": str(span_file), "OTEL_BSP_SCHEDULE_DELAY": "100"}
    _prepare(monkeypatch, env)
    senders: list[str] = []
    sids: list[str] = []
    with Stack(env=env, run_dir=tmp_path / "run", port=free_port()) as stack, ThreadPoolExecutor(8) as pool:

        def batched() -> bool:
            return any(s["kind"] == "CONSUMER" and s["attributes"].get("repotalk.batch.size", 1) > 1
                       for s in _spans(span_file))

        # A burst of eight at once: the outbox relay's pass takes them together. Bursts until one travelled in a
        # batch (on a machine this slow, the first may reach the relay one by one).
        for burst in range(5):
            batch = [(f"whatsapp:+1555000{burst}{i:03d}", new_message_sid()) for i in range(8)]
            posted = list(pool.map(lambda pair: post_webhook(stack.base_url, QUESTION, pair[0], pair[1],
                                                             twilio.auth_token).status_code, batch))
            assert posted == [200] * 8
            senders.extend(sender for sender, _ in batch)
            sids.extend(sid for _, sid in batch)
            wait_until(lambda: all(_answers(twilio, s) for s in senders), 60, "every answer at fake Twilio")
            try:
                wait_until(batched, 5, "a consumer span of a batch")
                break
            except AssertionError:
                continue
        assert batched(), "no event travelled in a batch"
        for sender in senders:
            assert len([m for m in twilio.messages if m.to == sender]) == 1, sender
        for sid in sids:
            chain, _in_trace = wait_until(lambda sid=sid: _turn_chain(span_file, sid), 30, "the whole turn's spans")
            assert _services_along(chain) == TURN, [(s["service"], s["name"]) for s in chain]
            consumers = [s["name"] for s in chain if s["kind"] == "CONSUMER"]
            assert consumers == ["run/repotalk.processor.handle", "run/repotalk.code_search.handle",
                                 "run/repotalk.ai_engine.handle", "run/repotalk.processor.handle",
                                 "run/repotalk.gateway.handle"]


def test_every_process_exports_its_last_spans_as_it_stops(
    base_env: dict[str, str], pg_url: str, redis_prefix: str, twilio: FakeTwilio, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the batch processor's own schedule (spans go out every 5 s), a turn answered just before the stack
    stops is still one whole trace in the file: each process, the HTTP gateway under uvicorn included (which ends
    itself with the signal it was stopped by, without running exit handlers), flushes its spans as it stops."""
    from tests.conftest import REDIS_URL

    span_file = tmp_path / "spans.jsonl"
    env = {**_stack_env(base_env, pg_url, REDIS_URL, redis_prefix, twilio, tmp_path),
           "REPOTALK_TRACE_FILE": str(span_file), "OTEL_BSP_SCHEDULE_DELAY": "30000"}
    _prepare(monkeypatch, env)
    sid = new_message_sid()
    with Stack(env=env, run_dir=tmp_path / "run", port=free_port()) as stack:
        assert post_webhook(stack.base_url, QUESTION, SENDER, sid, twilio.auth_token).status_code == 200
        wait_until(lambda: _answers(twilio, SENDER), 60, "the answer at fake Twilio")
        assert _turn_chain(span_file, sid) is None  # nothing exported yet: the schedule is 30 s
    found = _turn_chain(span_file, sid)
    assert found is not None, sorted({(s["service"], s["name"]) for s in _spans(span_file)})
    assert _services_along(found[0]) == TURN
