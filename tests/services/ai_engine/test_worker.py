"""search.completed -> ai.response through the handler: offline, and OpenAI through a local fake server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from libs.common import bus
from libs.common.events import AIResponse, EventType, HistoryItem, Service, derived_id
from services.ai_engine import worker
from services.ai_engine.openai_provider import SYSTEM_PROMPT, cost_usd
from tests.conftest import apply_env
from tests.fakes.openai_server import FakeOpenAI
from tests.services.ai_engine.helpers import completed, envelope, hits

BEST = "repotalk/services/gateway/signature.py:41"


def _answer(search_envelope: object) -> tuple[AIResponse, str]:
    with bus.capture_published() as sent:
        worker.handle_search_completed(search_envelope)  # type: ignore[arg-type]
    assert len(sent) == 1
    published = sent[0]
    assert published.type is EventType.AI_RESPONSE
    assert published.correlation_id == "SM0001"
    assert published.source == "ai_engine"
    data = published.data()
    assert isinstance(data, AIResponse)
    return data, published.id


@pytest.fixture
def fake_openai(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        apply_env(
            monkeypatch,
            OPENAI_API_KEY="sk-test-key",
            OPENAI_BASE_URL=fake.base_url,
            OPENAI_MODEL="gpt-4o-mini",
            OPENAI_MAX_RETRIES="0",
            AI_TIMEOUT="5",
        )
        yield fake


def test_worker_shape() -> None:
    assert worker.SERVICE is Service.AI_ENGINE
    assert set(worker.HANDLERS) == {EventType.SEARCH_COMPLETED}
    worker.startup()


def test_offline_answer_without_keys(base_env: dict[str, str]) -> None:
    response, event_id = _answer(envelope(completed()))
    assert response.answerer == "offline"
    assert response.fallback_reason is None
    assert response.session_id == "sess1"
    assert response.user_id == "u_abc"
    assert response.question == "where do we validate the twilio signature?"
    assert BEST in response.answer.split("\n")[0]
    assert response.citations[0] == BEST
    assert "repotalk/services/gateway/webhooks.py:88" in response.citations
    assert response.input_tokens == response.output_tokens == 0
    assert event_id == derived_id("SM0001", EventType.AI_RESPONSE)


def test_redelivery_publishes_the_same_event(base_env: dict[str, str]) -> None:
    search = envelope(completed())
    first, first_id = _answer(search)
    again, again_id = _answer(search)
    assert first_id == again_id
    assert first.answer == again.answer


def test_pattern_no_hits_and_errors_are_answered_without_a_model(fake_openai: FakeOpenAI) -> None:
    pattern, _ = _answer(envelope(completed(query="verify_", mode="pattern")))
    assert pattern.answerer == "pattern"
    assert pattern.answer.startswith("*3 matches*")
    nothing, _ = _answer(envelope(completed([])))
    assert nothing.answerer == "no_results"
    assert "I couldn't find that" in nothing.answer
    broken = completed(query="(", mode="pattern").model_copy(update={"error": "invalid regex: unbalanced parenthesis"})
    error, _ = _answer(envelope(broken))
    assert error.answerer == "search_error"
    assert "invalid regex: unbalanced parenthesis" in error.answer
    assert fake_openai.requests == []


def test_openai_request_carries_model_prompt_sources_and_history(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply(f"The signature is checked in `{BEST}`.", prompt_tokens=812, completion_tokens=64)
    history = [
        HistoryItem(role="user", text="what does the gateway do?"),
        HistoryItem(role="assistant", text="It receives Twilio webhooks."),
    ]
    response, _ = _answer(envelope(completed(history=history)))
    assert response.answerer == "openai"
    assert len(fake_openai.requests) == 1
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-key"
    body = sent.json
    assert body["model"] == "gpt-4o-mini"
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert system.startswith(SYSTEM_PROMPT.split("\n")[0])
    assert "repo/path:line" in system
    assert "do not answer" in system
    assert messages[1]["content"] == "what does the gateway do?"
    assert messages[2]["content"] == "It receives Twilio webhooks."
    question = messages[3]["content"]
    assert "[1] repotalk/services/gateway/signature.py:41-46 (function, verify_signature, python)" in question
    assert "[2] repotalk/services/gateway/webhooks.py:88-120" in question
    assert "[3] repotalk/docs/twilio.md:12-20" in question
    assert "hmac.compare_digest(expected, signature)" in question
    assert question.endswith("Question: where do we validate the twilio signature?")


def test_openai_answer_is_whatsapp_formatted_with_usage_and_cost(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply(
        "## Signature check\n\n**Twilio** signatures are verified in "
        f"{BEST}.\n\n| File | Role |\n|---|---|\n| signature.py | verify |\n",
        model="gpt-4o-mini-2024-07-18", prompt_tokens=1000, completion_tokens=200,
    )
    response, _ = _answer(envelope(completed()))
    assert response.answer == "\n".join([
        "*Signature check*",
        "",
        f"*Twilio* signatures are verified in {BEST}.",
        "",
        "*File · Role*",
        "• signature.py — verify",
    ])
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.input_tokens == 1000
    assert response.output_tokens == 200
    # gpt-4o-mini: $0.15 in / $0.60 out per million tokens.
    assert response.cost_usd == pytest.approx(0.00015 + 0.00012)
    assert response.cost_usd == cost_usd("gpt-4o-mini-2024-07-18", 1000, 200)
    assert response.latency_ms > 0
    assert response.citations == [BEST]
    assert response.fallback_reason is None


def test_hallucinated_citation_is_removed(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply(
        f"It happens in `{BEST}` (and in repotalk/services/gateway/crypto.py:12).\n"
        "- repotalk/libs/imaginary.py:5\n"
        "- repotalk/services/gateway/webhooks.py:95 calls it"
    )
    response, _ = _answer(envelope(completed()))
    assert "crypto.py" not in response.answer
    assert "imaginary.py" not in response.answer
    assert response.answer == "\n".join([
        f"It happens in `{BEST}`.",
        "• repotalk/services/gateway/webhooks.py:95 calls it",
    ])
    assert response.citations == [BEST, "repotalk/services/gateway/webhooks.py:95"]


def _assert_offline_fallback(response: AIResponse, reason: str) -> None:
    assert response.answerer == "offline"
    assert response.fallback_reason == reason
    assert BEST in response.answer.split("\n")[0]
    assert "unavailable" in response.answer
    assert response.input_tokens == 0
    assert response.cost_usd == 0


def test_server_error_falls_back_after_the_sdk_retries(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_env(monkeypatch, OPENAI_MAX_RETRIES="1")
    fake_openai.error(500)
    fake_openai.error(503, "overloaded")
    response, _ = _answer(envelope(completed()))
    _assert_offline_fallback(response, "openai: HTTP 503")
    assert len(fake_openai.requests) == 2
    assert fake_openai.pending == 0


def test_client_error_falls_back(fake_openai: FakeOpenAI) -> None:
    fake_openai.error(401, "Incorrect API key provided", error_type="invalid_request_error", code="invalid_api_key")
    response, _ = _answer(envelope(completed()))
    _assert_offline_fallback(response, "openai: HTTP 401")


def test_malformed_json_falls_back(fake_openai: FakeOpenAI) -> None:
    fake_openai.malformed()
    response, _ = _answer(envelope(completed()))
    _assert_offline_fallback(response, "openai: malformed response")


def test_empty_content_falls_back(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply("   ")
    response, _ = _answer(envelope(completed()))
    _assert_offline_fallback(response, "openai: empty content")


def test_timeout_falls_back(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, AI_TIMEOUT="0.3")
    fake_openai.reply("too late", delay=30)
    response, _ = _answer(envelope(completed()))
    _assert_offline_fallback(response, "openai: timeout")


def test_unreachable_server_falls_back(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI() as fake:
        url = fake.base_url  # a port that was free a moment ago and is closed now
    apply_env(monkeypatch, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=url, OPENAI_MAX_RETRIES="0")
    response, _ = _answer(envelope(completed()))
    _assert_offline_fallback(response, "openai: connection error")


def test_answers_stay_within_the_configured_length(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, AI_MAX_ANSWER_CHARS="300")
    fake_openai.reply(f"See {BEST}.\n\n```python\n" + "\n".join(f"x{i} = {i}" for i in range(200)) + "\n```")
    response, _ = _answer(envelope(completed()))
    assert response.answerer == "openai"
    assert len(response.answer) <= 300
    assert response.answer.count("```") % 2 == 0
    assert hits()[0].location in response.answer


def test_an_answer_made_only_of_invented_citations_falls_back_but_keeps_its_cost(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply("- repotalk/libs/imaginary.py:5\n- repotalk/libs/other.py:9", prompt_tokens=400,
                      completion_tokens=10)
    response, _ = _answer(envelope(completed()))
    assert response.answerer == "offline"
    assert response.fallback_reason == "openai: no usable content"
    assert BEST in response.answer.split("\n")[0]
    assert (response.input_tokens, response.output_tokens) == (400, 10)
    assert response.cost_usd == cost_usd("gpt-4o-mini-2024-07-18", 400, 10)
