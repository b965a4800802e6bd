"""The per-user daily budget: spend is charged once per turn, and a user past the budget gets a friendly
answer from the search results without a model call. On SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from libs.common.db import session_scope
from libs.common.events import AIResponse
from libs.common.models.ai_usage import AIUsage
from services.ai_engine import budget
from tests.conftest import apply_env
from tests.fakes.openai_server import FakeOpenAI
from tests.services.ai_engine.helpers import BEST, answer, completed, envelope

ANSWER = f"It is checked in `{BEST}`."
# gpt-4o-mini: 10k in + 1k out = $0.0015 + $0.0006 = $0.0021 per answer.
TURN_COST = 0.0021


@pytest.fixture
def llm(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        apply_env(monkeypatch, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.base_url,
                  AI_USER_DAILY_BUDGET_USD="0.004")
        yield fake


def _turn(sid: str, user_id: str = "u_abc") -> AIResponse:
    search = completed().model_copy(update={"request": completed().request.model_copy(update={"user_id": user_id})})
    response, _ = answer(envelope(search, correlation_id=sid))
    return response


def _rows() -> list[tuple[str, str, float]]:
    with session_scope() as session:
        rows = session.execute(select(AIUsage.correlation_id, AIUsage.user_id, AIUsage.cost_usd)
                               .order_by(AIUsage.correlation_id)).all()
    return [(r[0], r[1], r[2]) for r in rows]


def test_spend_is_charged_once_per_turn_and_the_budget_stops_model_calls(llm: FakeOpenAI) -> None:
    llm.reply(ANSWER, prompt_tokens=10_000, completion_tokens=1_000)
    llm.reply(ANSWER, prompt_tokens=10_000, completion_tokens=1_000)
    first = _turn("SM1")
    second = _turn("SM2")
    assert (first.answerer, second.answerer) == ("openai", "openai")
    assert _rows() == [("SM1", "u_abc", pytest.approx(TURN_COST)), ("SM2", "u_abc", pytest.approx(TURN_COST))]
    assert budget.spent_today("u_abc") == pytest.approx(2 * TURN_COST)

    # $0.0042 >= $0.004: the third question is answered from the search results, without a call.
    third = _turn("SM3")
    assert len(llm.requests) == 2
    assert third.answerer == "budget"
    assert BEST in third.answer.split("\n")[0]
    assert "today's AI allowance" in third.answer
    assert third.cost_usd == 0
    assert len(_rows()) == 2

    # Another user has a budget of their own.
    llm.reply(ANSWER, prompt_tokens=10_000, completion_tokens=1_000)
    assert _turn("SM4", user_id="u_other").answerer == "openai"


def test_a_redelivered_turn_is_neither_blocked_by_nor_charged_for_itself(llm: FakeOpenAI,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, AI_USER_DAILY_BUDGET_USD="0.002")
    llm.reply(ANSWER, prompt_tokens=10_000, completion_tokens=1_000)
    llm.reply(ANSWER, prompt_tokens=10_000, completion_tokens=1_000)
    assert _turn("SM1").answerer == "openai"  # spends $0.0021 of $0.002
    again = _turn("SM1")  # the same search.completed delivered again
    assert again.answerer == "openai"
    assert _rows() == [("SM1", "u_abc", pytest.approx(TURN_COST))]
    assert _turn("SM2").answerer == "budget"


def test_yesterday_does_not_count_and_older_days_are_removed(llm: FakeOpenAI) -> None:
    today = budget.today()
    with session_scope() as session:
        session.add(AIUsage(correlation_id="SMold", user_id="u_abc", day=today - timedelta(days=3), cost_usd=5.0))
        session.add(AIUsage(correlation_id="SMyday", user_id="u_abc", day=today - timedelta(days=1), cost_usd=5.0))
    llm.reply(ANSWER, prompt_tokens=10_000, completion_tokens=1_000)
    assert _turn("SM1").answerer == "openai"
    assert [row[0] for row in _rows()] == ["SM1", "SMyday"]


def test_without_a_budget_nothing_is_stored(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI() as fake:
        apply_env(monkeypatch, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.base_url)
        fake.reply(ANSWER, prompt_tokens=10_000, completion_tokens=1_000)
        assert _turn("SM1").answerer == "openai"
    assert _rows() == []


def test_an_unreadable_budget_fails_open(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # No schema in this database: the budget cannot be read, the user still gets a model answer.
    with FakeOpenAI() as fake:
        apply_env(monkeypatch, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.base_url,
                  AI_USER_DAILY_BUDGET_USD="1")
        fake.reply(ANSWER)
        assert _turn("SM1").answerer == "openai"
