"""The worker contract: search.completed -> exactly one ai.response, with a derived id; answers that need
no model; the chain's configuration checked at start."""

from __future__ import annotations

import logging

import pytest

from libs.common.events import AIResponse, Envelope, EventType, Service, derived_id
from services.ai_engine import worker
from tests.conftest import apply_env
from tests.fakes.openai_server import FakeOpenAI
from tests.services.ai_engine.helpers import BEST, answer, completed, envelope


def test_worker_shape(base_env: dict[str, str]) -> None:
    assert worker.SERVICE is Service.AI_ENGINE
    assert set(worker.HANDLERS) == {EventType.SEARCH_COMPLETED, EventType.USER_ERASED, EventType.RETENTION_DUE}
    worker.startup()


def test_startup_names_the_chain_in_order(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    apply_env(monkeypatch, OPENAI_API_KEY="sk-x", ANTHROPIC_API_KEY="sk-ant-x", AI_PROVIDERS="anthropic,openai,local")
    with caplog.at_level(logging.INFO, logger="services.ai_engine.worker"):
        worker.startup()
    assert "answering with anthropic (claude-haiku-4-5) -> openai (gpt-4o-mini) -> offline answerer" in caplog.text
    assert "AI_PROVIDERS names local but LOCAL_LLM_BASE_URL is not set" in caplog.text
    assert "sk-x" not in caplog.text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AI_PROVIDERS": "openai,gemini"}, "unknown provider 'gemini'"),
        ({"AI_PRICES": "gpt-4o=2.5"}, "expected model=input/output"),
    ],
)
def test_startup_refuses_a_malformed_chain(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    apply_env(monkeypatch, **env)
    with pytest.raises(ValueError, match=message):
        worker.startup()


def test_a_payload_of_another_type_is_a_permanent_error(base_env: dict[str, str]) -> None:
    from libs.common import bus

    wrong = Envelope.new(AIResponse(session_id="s", user_id="u", question="q", answer="a", answerer="offline"),
                         correlation_id="SM0001")
    with pytest.raises(bus.PermanentError):
        worker.handle_search_completed(wrong)


def test_offline_answer_without_keys(base_env: dict[str, str]) -> None:
    response, event_id = answer(envelope(completed()))
    assert response.answerer == "offline"
    assert response.fallback_reason is None
    assert response.session_id == "sess1"
    assert response.user_id == "u_abc"
    assert response.question == "where do we validate the twilio signature?"
    assert BEST in response.answer.split("\n")[0]
    assert "no AI model configured" in response.answer
    assert response.citations[0] == BEST
    assert "repotalk/services/gateway/webhooks.py:88" in response.citations
    assert response.input_tokens == response.output_tokens == 0
    assert response.attempts == []
    assert event_id == derived_id("SM0001", EventType.AI_RESPONSE)


def test_redelivery_publishes_the_same_event(base_env: dict[str, str]) -> None:
    search = envelope(completed())
    first, first_id = answer(search)
    again, again_id = answer(search)
    assert first_id == again_id
    assert first.answer == again.answer


def test_pattern_no_hits_and_errors_are_answered_without_a_model(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAI() as fake:
        apply_env(monkeypatch, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.base_url)
        pattern, _ = answer(envelope(completed(query="verify_", mode="pattern")))
        assert pattern.answerer == "pattern"
        assert pattern.answer.startswith("*3 matches*")
        nothing, _ = answer(envelope(completed([])))
        assert nothing.answerer == "no_results"
        assert "I couldn't find that" in nothing.answer
        broken = completed(query="(", mode="pattern").model_copy(
            update={"error": "invalid regex: unbalanced parenthesis"})
        error, _ = answer(envelope(broken))
        assert error.answerer == "search_error"
        assert "invalid regex: unbalanced parenthesis" in error.answer
        assert fake.requests == []


def test_a_misconfigured_chain_still_answers(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, OPENAI_API_KEY="sk-test", AI_PROVIDERS="openai,nonsense")
    response, _ = answer(envelope(completed()))
    assert response.answerer == "offline"
    assert BEST in response.answer
