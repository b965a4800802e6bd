"""Analytics: every event recorded once, turns merged in any order, the summary exactly right."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from libs.common import db
from libs.common.api_keys import create_key
from libs.common.events import Envelope, EventType, Service, UserErased
from libs.common.models.analytics import AnalyticsEvent, ErasedUser, SearchQuery, TurnMetrics
from services.analytics import worker
from services.analytics.api import router
from services.analytics.recorder import APPLY, record
from services.analytics.summary import percentile, summary
from tests.services.analytics.turns import Turn, all_events, at, event, of_type, scenario

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def feed(envelopes: list[Envelope]) -> None:
    for envelope in envelopes:
        worker.HANDLERS[envelope.type](envelope)


def shuffled_with_duplicates(turns: dict[str, Turn], seed: int = 7) -> list[Envelope]:
    """Every event in a scrambled order, and a few of them delivered twice."""
    envelopes = all_events(turns)
    duplicates = [
        *of_type(turns["SM1"], EventType.MESSAGE_SENT),
        *of_type(turns["SM2"], EventType.AI_RESPONSE),
        *of_type(turns["SM7"], EventType.MESSAGE_STATUS),
        *of_type(turns["SM3"], EventType.SEARCH_COMPLETED),
        *of_type(turns["SM6"], EventType.MESSAGE_FAILED),
    ]
    mixed = envelopes + duplicates
    random.Random(seed).shuffle(mixed)
    return mixed


def turn(sid: str) -> TurnMetrics:
    with db.session_scope() as session:
        row = session.get(TurnMetrics, sid)
        assert row is not None, sid
        return row


EXPECTED_SUMMARY_BODY = {
    "turns": {"received": 9, "answered": 4, "failed": 2, "rate_limited": 1, "commands": 1, "pending": 1,
              "users": 5},
    "messages_sent": 9,
    "latency_ms": {
        # e2e of SM1..SM10 (no SM5: never received, no SM8: not sent): 530 800 1000 2000 2500 3000 4000
        "end_to_end": {"count": 7, "p50": 2000.0, "p95": 3700.0, "p99": 3940.0},
        "hops": {
            # 50 100 100 100 100 200 300
            "received_to_search_requested": {"count": 7, "p50": 100.0, "p95": 270.0, "p99": 294.0},
            # 50 100 200 200 300 300
            "search": {"count": 6, "p50": 200.0, "p95": 300.0, "p99": 300.0},
            # 10 10 100 1000 2000
            "ai": {"count": 5, "p50": 100.0, "p95": 1800.0, "p99": 1960.0},
            # 40 40 100 100 100
            "ai_to_reply_ready": {"count": 5, "p50": 100.0, "p95": 100.0, "p99": 100.0},
            # 300 400 500 600 600 1100 1800 3400
            "reply_ready_to_sent": {"count": 8, "p50": 600.0, "p95": 2840.0, "p99": 3288.0},
        },
    },
    "search": {
        "total": 6,
        "by_mode": {
            "pattern": {"count": 2, "avg_results": 2.5, "no_results": 1, "errors": 1, "p50_ms": 42.5, "p95_ms": 76.25},
            "question": {"count": 4, "avg_results": 2.5, "no_results": 0, "errors": 0, "p50_ms": 135.0,
                         "p95_ms": 235.0},
        },
    },
    "answerers": {"offline": 1, "openai": 2, "pattern": 1, "search_error": 1},
    "ai": {
        "input_tokens": 1300, "output_tokens": 200, "cost_usd": 0.000315, "fallbacks": 1, "fallbacks_taken": 1,
        "retries": 2,
    },
    "errors_by_stage": {"ai_engine": 1, "delivery": 1},
}


def test_worker_handles_every_event_type() -> None:
    assert worker.SERVICE is Service.ANALYTICS
    assert set(worker.HANDLERS) == set(EventType)
    assert set(APPLY) == set(EventType)
    worker.startup()


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0], 0.99) == 1.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 0.5) == 25.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 0.95) == pytest.approx(38.5)


def test_summary_is_exact_for_scrambled_and_duplicated_events(database: str) -> None:
    feed(shuffled_with_duplicates(scenario(T0)))
    result = summary(24, now=T0)
    body = {key: value for key, value in result.items() if key not in ("window", "events")}
    assert body == EXPECTED_SUMMARY_BODY
    assert result["window"]["hours"] == 24
    assert result["events"][EventType.MESSAGE_FAILED.value] == 2  # SM1's analytics failure and SM6's


def test_arrival_order_does_not_change_the_result(database: str) -> None:
    turns = scenario(T0)
    feed(list(reversed(all_events(turns))))
    reversed_summary = summary(24, now=T0)
    with db.session_scope() as session:
        session.query(TurnMetrics).delete()
        session.query(SearchQuery).delete()
        session.query(AnalyticsEvent).delete()
    feed(shuffled_with_duplicates(turns, seed=99))
    assert summary(24, now=T0) == reversed_summary


def test_each_event_is_recorded_once(database: str) -> None:
    turns = scenario(T0)
    envelopes = all_events(turns)
    assert all(record(e) for e in envelopes)
    assert not any(record(e) for e in envelopes)
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(AnalyticsEvent)) == len(envelopes)
        assert session.scalar(select(func.count()).select_from(SearchQuery)) == 7
    sm1 = turn("SM1")
    assert sm1.chunks_sent == 2
    assert sm1.chunk_count == 2


def test_turn_rows_hold_the_hops(database: str) -> None:
    feed(shuffled_with_duplicates(scenario(T0)))
    sm1 = turn("SM1")
    start = T0 - timedelta(minutes=50)
    assert sm1.status == "answered"  # the analytics stage's own failure does not fail the turn
    assert sm1.error_stage is None
    assert sm1.user_id == "u_alice"
    assert sm1.received_at == start
    assert sm1.started_at == start
    assert sm1.search_requested_at == at(start, 100)
    assert sm1.first_sent_at == at(start, 2900)
    assert sm1.last_sent_at == at(start, 3000)
    assert (sm1.search_mode, sm1.search_kinds, sm1.hit_count, sm1.search_took_ms) == ("question", "keyword,symbol", 3,
                                                                                      150)
    assert (sm1.answerer, sm1.model, sm1.input_tokens, sm1.output_tokens) == ("openai", "gpt-4o-mini", 800, 120)
    assert (sm1.e2e_ms, sm1.queue_ms, sm1.search_ms, sm1.ai_ms, sm1.persist_ms, sm1.send_ms) == (
        3000, 100, 200, 2000, 100, 600)
    sm6 = turn("SM6")
    assert (sm6.status, sm6.error_stage, sm6.error_reason) == ("failed", "ai_engine", "RuntimeError")
    sm7 = turn("SM7")
    assert (sm7.status, sm7.error_stage, sm7.error_reason) == ("failed", "delivery", "undelivered (63016)")
    sm5 = turn("SM5")
    assert (sm5.status, sm5.received_at, sm5.started_at) == ("rate_limited", None, T0 - timedelta(minutes=20))
    assert turn("SM8").status == "pending"
    assert turn("SM4").status == "command"


def test_a_turn_is_only_complete_when_its_last_chunk_is_sent(database: str) -> None:
    late = Turn("SM20", "u_zed", T0 - timedelta(minutes=1)).received().reply(100).sent(500, 900, 1300)
    first_two = [e for e in late.events if not (e.type is EventType.MESSAGE_SENT and e.payload["chunk_index"] == 2)]
    feed(first_two)
    assert turn("SM20").e2e_ms is None
    feed(late.events)
    assert turn("SM20").e2e_ms == 1300


def test_concurrent_events_of_one_turn_lose_no_update(database: str) -> None:
    chunks = 12
    busy = Turn("SM30", "u_zed", T0 - timedelta(minutes=1)).received().search(10, 20, 2, 5).ai(30, "offline")
    busy.reply(40).sent(*[100 + 10 * i for i in range(chunks)])
    envelopes = busy.events * 2  # every event twice, concurrently
    random.Random(3).shuffle(envelopes)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def run(share: list[Envelope]) -> None:
        try:
            barrier.wait()
            feed(share)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(envelopes[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    row = turn("SM30")
    assert row.chunks_sent == chunks
    assert row.first_sent_at == at(busy.start, 100)
    assert row.last_sent_at == at(busy.start, 100 + 10 * (chunks - 1))
    assert row.status == "answered"
    assert row.e2e_ms == 100 + 10 * (chunks - 1)
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(AnalyticsEvent)) == len(busy.events)


def test_user_erased_removes_the_users_link_and_keeps_the_counts(database: str) -> None:
    feed(shuffled_with_duplicates(scenario(T0)))
    before = summary(24, now=T0)
    erased = event(UserErased(user_id="u_alice"), "SMdelete", T0, "gateway")
    feed([erased, erased])
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(TurnMetrics).where(
            TurnMetrics.user_id == "u_alice")) == 0
        assert session.scalar(select(func.count()).select_from(ErasedUser)) == 1
        assert session.scalar(select(ErasedUser.user_hash)) != "u_alice"
        assert session.get(TurnMetrics, "SM2").user_id == "u_bob"  # type: ignore[union-attr]
    after = summary(24, now=T0)
    assert after["turns"]["users"] == before["turns"]["users"] - 1
    assert {k: v for k, v in after["turns"].items() if k != "users"} == {
        k: v for k, v in before["turns"].items() if k != "users"}
    assert after["latency_ms"] == before["latency_ms"]
    assert after["ai"] == before["ai"]
    # Events of the user that arrive after the erasure (late chunk, redelivery) do not bring the id back.
    late = Turn("SM40", "u_alice", T0 - timedelta(minutes=1)).received().reply(10, kind="command").sent(50)
    feed(late.events)
    assert turn("SM40").user_id is None
    assert turn("SM40").status == "command"


def test_summary_window_excludes_older_turns(database: str) -> None:
    feed(all_events(scenario(T0)))
    assert summary(24, now=T0)["turns"]["received"] == 9
    assert summary(48, now=T0)["turns"]["received"] == 10
    assert summary(48, now=T0)["answerers"]["openai"] == 3
    assert summary(0.2, now=T0)["turns"]["received"] == 3  # the last 12 minutes: SM7, SM8, SM10
    with pytest.raises(ValueError):
        summary(0, now=T0)


def test_empty_summary(database: str) -> None:
    result = summary(24, now=T0)
    assert result["turns"]["received"] == 0
    assert result["latency_ms"]["end_to_end"] == {"count": 0, "p50": None, "p95": None, "p99": None}
    assert result["search"] == {"total": 0, "by_mode": {}}
    assert result["ai"] == {
        "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "fallbacks": 0, "fallbacks_taken": 0, "retries": 0,
    }


def _client(with_key: bool = True) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    headers = {"Authorization": f"Bearer {create_key(f'analytics-{uuid.uuid4().hex[:8]}')}"} if with_key else {}
    return TestClient(app, headers=headers)


def test_summary_api(database: str) -> None:
    # The API's window ends now: place the turns in the last hour (and one 30 hours ago).
    now = db.utcnow()
    feed(shuffled_with_duplicates(scenario(now)))
    client = _client()
    response = client.get("/api/v1/analytics/summary", params={"hours": 24})
    assert response.status_code == 200
    body = response.json()
    assert body["turns"] == EXPECTED_SUMMARY_BODY["turns"]
    assert body["latency_ms"] == EXPECTED_SUMMARY_BODY["latency_ms"]
    assert body["search"] == EXPECTED_SUMMARY_BODY["search"]
    assert body["errors_by_stage"] == {"ai_engine": 1, "delivery": 1}
    default = client.get("/api/v1/analytics/summary").json()
    assert default["window"]["hours"] == 24
    assert default["turns"] == body["turns"]
    assert client.get("/api/v1/analytics/summary?hours=48").json()["turns"]["received"] == 10


@pytest.mark.parametrize("hours", ["0", "-3", "abc", "nan", "inf", "100000"])
def test_summary_api_rejects_bad_windows(database: str, hours: str) -> None:
    response = _client().get("/api/v1/analytics/summary", params={"hours": hours})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail and detail[0]["loc"] == ["query", "hours"]


def test_summary_api_needs_an_api_key(database: str) -> None:
    anonymous = _client(with_key=False)
    missing = anonymous.get("/api/v1/analytics/summary")
    assert missing.status_code == 401 and "WWW-Authenticate" in missing.headers
    wrong = anonymous.get("/api/v1/analytics/summary", headers={"X-API-Key": "rtk_000000000000_" + "A" * 43})
    assert wrong.status_code == 403
    assert _client().get("/api/v1/analytics/summary").status_code == 200
