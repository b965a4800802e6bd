"""The provider chain against scripted local servers: retries with backoff (and retry-after), cooldown
of a failing provider, fallback order, timeouts, malformed replies, context-too-long, and the offline
answer when every provider is down. Waiting is recorded by the fake clock, never done."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from libs.common.events import AIResponse, HistoryItem, Hit
from services.ai_engine import chain
from services.ai_engine.prompting import Message, Prompt
from services.ai_engine.provider import Completion, Failure, Provider, ProviderError
from tests.conftest import apply_env
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.services.ai_engine.conftest import FakeClock
from tests.services.ai_engine.helpers import BEST, answer, completed, envelope, hits

ANSWER = f"The signature is checked in `{BEST}`."
HISTORY = [
    HistoryItem(role="user", text="what does the gateway do?"),
    HistoryItem(role="assistant", text="It receives Twilio webhooks and " + "checks them. " * 40),
]


@dataclass
class Fakes:
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    local: FakeOpenAI
    monkeypatch: pytest.MonkeyPatch

    def configure(self, **env: str) -> None:
        apply_env(self.monkeypatch, **env)

    def counts(self) -> tuple[int, int, int]:
        return len(self.openai.requests), len(self.anthropic.requests), len(self.local.requests)


@pytest.fixture
def fakes(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    with FakeOpenAI() as openai_fake, FakeAnthropic() as anthropic_fake, FakeOpenAI() as local_fake:
        apply_env(
            monkeypatch,
            OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=openai_fake.base_url,
            ANTHROPIC_API_KEY="sk-ant-test", ANTHROPIC_BASE_URL=anthropic_fake.base_url,
            LOCAL_LLM_BASE_URL=local_fake.base_url, LOCAL_LLM_MODEL="llama3.1",
            AI_PROVIDERS="openai,anthropic,local",
            AI_TIMEOUT="5", AI_MAX_RETRIES="2", AI_BACKOFF_BASE="0.5", AI_BACKOFF_MAX="8",
            AI_COOLDOWN_FAILURES="3", AI_COOLDOWN_SECONDS="60", AI_RETRY_AFTER_MAX="10",
        )
        yield Fakes(openai_fake, anthropic_fake, local_fake, monkeypatch)


def _turn(sid: str = "SM0001", **request: object) -> AIResponse:
    response, _ = answer(envelope(completed(**request), correlation_id=sid))  # type: ignore[arg-type]
    return response


def _outcomes(response: AIResponse) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome) for a in response.attempts]


def test_429_then_success_honours_retry_after(fakes: Fakes, clock: FakeClock) -> None:
    fakes.openai.error(429, "Rate limit reached", error_type="requests", code="rate_limit_exceeded", retry_after="2")
    fakes.openai.reply(ANSWER)
    response = _turn()
    assert response.answerer == "openai"
    assert response.answer == ANSWER
    assert fakes.counts() == (2, 0, 0)
    assert clock.sleeps == [2.0]  # longer than the first backoff (0.25-0.5 s): the server's wait wins
    assert response.retries == 1
    assert response.fallbacks == 0
    assert response.fallback_reason is None
    assert _outcomes(response) == [("openai", "HTTP 429"), ("openai", "ok")]
    assert fakes.openai.requests[0].json == fakes.openai.requests[1].json  # the same request again


def test_retry_after_ms_is_read_too(fakes: Fakes, clock: FakeClock) -> None:
    fakes.openai.error(429, retry_after_ms=1500)
    fakes.openai.reply(ANSWER)
    assert _turn().answerer == "openai"
    assert clock.sleeps == [1.5]


def test_backoff_doubles_with_jitter_on_5xx_and_timeouts(fakes: Fakes, clock: FakeClock) -> None:
    fakes.configure(OPENAI_TIMEOUT="0.3", AI_COOLDOWN_FAILURES="5")
    fakes.openai.error(503, "overloaded")
    fakes.openai.reply("too late", delay=10)
    fakes.openai.reply(ANSWER)
    response = _turn()
    assert response.answerer == "openai"
    assert _outcomes(response) == [("openai", "HTTP 503"), ("openai", "timeout"), ("openai", "ok")]
    assert len(clock.sleeps) == 2
    assert 0.25 <= clock.sleeps[0] <= 0.5
    assert 0.5 <= clock.sleeps[1] <= 1.0
    assert response.retries == 2


def test_5xx_until_cooldown_then_the_next_provider(fakes: Fakes, clock: FakeClock) -> None:
    for _ in range(3):
        fakes.openai.error(500)
    fakes.anthropic.reply(ANSWER, input_tokens=1000, output_tokens=100)
    first = _turn("SM1")
    assert first.answerer == "anthropic"
    assert first.answer == ANSWER
    assert fakes.counts() == (3, 1, 0)  # 1 call + 2 retries; the third failure cooled openai down
    assert len(clock.sleeps) == 2
    assert first.retries == 2
    assert first.fallbacks == 1
    assert first.fallback_reason == "openai: HTTP 500"
    assert _outcomes(first) == [("openai", "HTTP 500")] * 3 + [("anthropic", "ok")]
    assert first.cost_usd == pytest.approx(0.001 + 0.0005)  # failed calls cost nothing

    # While it cools down, openai is skipped without a request.
    fakes.anthropic.reply(ANSWER)
    clock.advance(59)
    second = _turn("SM2")
    assert second.answerer == "anthropic"
    assert fakes.counts() == (3, 2, 0)
    assert second.fallback_reason == "openai: cooling down"
    assert second.retries == 0
    assert _outcomes(second) == [("anthropic", "ok")]

    # After the cooldown one call probes it; it has recovered.
    clock.advance(2)
    fakes.openai.reply(ANSWER)
    third = _turn("SM3")
    assert third.answerer == "openai"
    assert third.fallback_reason is None
    assert fakes.counts() == (4, 2, 0)


def test_a_failed_probe_cools_down_again_at_once(fakes: Fakes, clock: FakeClock) -> None:
    for _ in range(3):
        fakes.openai.error(502)
    fakes.anthropic.reply(ANSWER)
    _turn("SM1")
    clock.advance(61)
    fakes.openai.error(502)
    fakes.anthropic.reply(ANSWER)
    probe = _turn("SM2")
    assert fakes.counts() == (4, 2, 0)  # one probe, no retries
    assert probe.answerer == "anthropic"
    assert probe.retries == 0
    fakes.anthropic.reply(ANSWER)
    _turn("SM3")
    assert fakes.counts() == (4, 3, 0)


def test_fallback_follows_the_configured_order(fakes: Fakes) -> None:
    fakes.configure(AI_PROVIDERS="local,anthropic,openai", AI_MAX_RETRIES="0")
    fakes.local.error(500)
    fakes.anthropic.overloaded()
    fakes.openai.reply(ANSWER)
    response = _turn()
    assert response.answerer == "openai"
    assert _outcomes(response) == [("local", "HTTP 500"), ("anthropic", "HTTP 529"), ("openai", "ok")]
    assert response.fallback_reason == "local: HTTP 500; anthropic: HTTP 529"
    assert response.fallbacks == 2


def test_a_long_retry_after_cools_the_provider_down_for_that_long(fakes: Fakes, clock: FakeClock) -> None:
    fakes.anthropic.error(429, "rate limited", retry_after="120")
    fakes.openai.reply(ANSWER)
    fakes.configure(AI_PROVIDERS="anthropic,openai")
    response = _turn("SM1")
    assert response.answerer == "openai"
    assert clock.sleeps == []  # nobody waits two minutes on a phone
    assert response.fallback_reason == "anthropic: HTTP 429 (retry after 120 s)"
    clock.advance(90)  # past AI_COOLDOWN_SECONDS, not past the server's retry-after
    fakes.openai.reply(ANSWER)
    assert _turn("SM2").fallback_reason == "anthropic: cooling down"
    clock.advance(31)
    fakes.anthropic.reply(ANSWER)
    assert _turn("SM3").answerer == "anthropic"


def test_timeouts_fall_back_after_the_retries(fakes: Fakes, clock: FakeClock) -> None:
    fakes.configure(AI_PROVIDERS="anthropic,local", ANTHROPIC_TIMEOUT="0.3", AI_MAX_RETRIES="1")
    fakes.anthropic.reply("too late", delay=10)
    fakes.anthropic.reply("too late", delay=10)
    fakes.local.reply(ANSWER, model="llama3.1")
    response = _turn()
    assert response.answerer == "local"
    assert _outcomes(response) == [("anthropic", "timeout"), ("anthropic", "timeout"), ("local", "ok")]
    assert response.fallback_reason == "anthropic: timeout"
    assert response.retries == 1
    assert len(clock.sleeps) == 1


def test_malformed_json_moves_on_without_a_retry(fakes: Fakes) -> None:
    fakes.openai.malformed()
    fakes.anthropic.malformed()
    fakes.local.reply(ANSWER)
    response = _turn()
    assert response.answerer == "local"
    assert fakes.counts() == (1, 1, 1)
    assert response.fallback_reason == "openai: malformed response; anthropic: malformed response"
    assert response.retries == 0


def test_empty_content_moves_on(fakes: Fakes) -> None:
    fakes.openai.reply("   ")
    fakes.anthropic.reply("")
    fakes.local.reply(ANSWER)
    response = _turn()
    assert response.answerer == "local"
    assert response.fallback_reason == "openai: empty content; anthropic: empty content"


def test_context_too_long_is_retried_once_with_a_trimmed_prompt(fakes: Fakes) -> None:
    fakes.openai.context_too_long()
    fakes.openai.reply(ANSWER)
    long_hits = hits() + [
        Hit(repo="repotalk", path=f"services/big_{i}.py", line=1, end_line=400, symbol=f"big_{i}", kind="class",
            snippet="\n".join(f"    value_{n} = compute({n})" for n in range(400)))
        for i in range(6)
    ]
    response, _ = answer(envelope(completed(long_hits, history=HISTORY)))
    assert response.answerer == "openai"
    assert response.retries == 1
    assert _outcomes(response) == [("openai", "context too long"), ("openai", "ok")]
    full, trimmed = (r.json["messages"] for r in fakes.openai.requests)
    assert [m["role"] for m in full] == ["system", "user", "assistant", "user"]
    assert [m["role"] for m in trimmed] == ["system", "user"]  # the history went first
    assert len(trimmed[-1]["content"]) < len(full[-1]["content"]) / 2
    assert "value_59 = compute(59)" in full[-1]["content"]
    assert "value_59 = compute(59)" not in trimmed[-1]["content"]
    assert "[1] repotalk/services/gateway/signature.py:41-46" in trimmed[-1]["content"]  # the sources stay
    assert trimmed[-1]["content"].endswith("Question: where do we validate the twilio signature?")


def test_context_too_long_twice_moves_on_with_the_full_prompt(fakes: Fakes, clock: FakeClock) -> None:
    fakes.anthropic.context_too_long()
    fakes.anthropic.context_too_long()
    fakes.local.reply(ANSWER)
    fakes.configure(AI_PROVIDERS="anthropic,local")
    response = _turn(history=HISTORY)
    assert response.answerer == "local"
    assert response.fallback_reason == "anthropic: context too long"
    assert clock.sleeps == []
    # Another model may have a larger context: it gets the whole prompt.
    assert [m["role"] for m in fakes.local.requests[0].json["messages"]] == ["system", "user", "assistant", "user"]


def test_every_provider_down_gives_the_offline_answer(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                      clock: FakeClock) -> None:
    with FakeOpenAI() as gone:
        closed = gone.base_url  # a port that was free a moment ago and is closed now
    with FakeOpenAI() as openai_fake, FakeAnthropic() as anthropic_fake:
        apply_env(monkeypatch, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=openai_fake.base_url,
                  ANTHROPIC_API_KEY="sk-ant", ANTHROPIC_BASE_URL=anthropic_fake.base_url,
                  LOCAL_LLM_BASE_URL=closed, AI_MAX_RETRIES="1")
        openai_fake.error(500)
        openai_fake.error(503)
        anthropic_fake.error(401, "invalid x-api-key")
        response = _turn()
        assert (len(openai_fake.requests), len(anthropic_fake.requests)) == (2, 1)
    assert response.answerer == "offline"
    assert BEST in response.answer.split("\n")[0]
    assert "The AI model is unavailable right now" in response.answer
    assert response.fallback_reason == "openai: HTTP 503; anthropic: HTTP 401; local: connection error"
    assert response.fallbacks == 3
    assert response.retries == 2  # openai once, local once; a 401 is not retried
    assert (response.input_tokens, response.cost_usd) == (0, 0)
    assert response.citations[0] == BEST
    assert len(clock.sleeps) == 2


def test_an_answer_of_invented_citations_moves_on_but_keeps_its_cost(fakes: Fakes) -> None:
    fakes.openai.reply("- repotalk/libs/imaginary.py:5\n- repotalk/libs/other.py:9", prompt_tokens=400,
                       completion_tokens=10)
    fakes.anthropic.reply(ANSWER, input_tokens=500, output_tokens=20)
    response = _turn()
    assert response.answerer == "anthropic"
    assert response.fallback_reason == "openai: no usable content"
    assert _outcomes(response) == [("openai", "no usable content"), ("anthropic", "ok")]
    assert (response.input_tokens, response.output_tokens) == (900, 30)
    assert response.cost_usd == pytest.approx((400 * 0.15 + 10 * 0.60 + 500 * 1 + 20 * 5) / 1e6)


def test_the_offline_answer_still_counts_what_was_paid(fakes: Fakes) -> None:
    fakes.configure(AI_PROVIDERS="openai")
    fakes.openai.reply("- repotalk/libs/imaginary.py:5", prompt_tokens=400, completion_tokens=10)
    response = _turn()
    assert response.answerer == "offline"
    assert response.fallback_reason == "openai: no usable content"
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert (response.input_tokens, response.output_tokens) == (400, 10)
    assert response.cost_usd == pytest.approx((400 * 0.15 + 10 * 0.60) / 1e6)


def test_the_turn_deadline_stops_retrying(fakes: Fakes, clock: FakeClock) -> None:
    fakes.configure(AI_TURN_TIMEOUT="8", AI_PROVIDERS="openai,anthropic")
    fakes.openai.error(429, retry_after="5")
    fakes.openai.error(429, retry_after="5")
    fakes.anthropic.reply(ANSWER)
    response = _turn()
    # A second 5 s wait would end past the 8 s turn: openai is left, anthropic gets the 3 s left.
    assert clock.sleeps == [5.0]
    assert response.answerer == "anthropic"
    assert response.fallback_reason == "openai: HTTP 429"
    assert fakes.counts() == (2, 1, 0)


class _Scripted(Provider):
    """An in-process provider whose calls take ``call_seconds`` on the fake clock."""

    def __init__(self, name: str, clock: FakeClock, call_seconds: float, failures: int) -> None:
        self.name, self.model, self.base_url, self.timeout = name, f"{name}-model", "", 30.0
        self.clock, self.call_seconds, self.failures, self.calls = clock, call_seconds, failures, 0

    def complete(self, prompt: Prompt, timeout: float) -> Completion:
        self.calls += 1
        self.clock.advance(min(self.call_seconds, timeout))
        if self.calls <= self.failures:
            raise ProviderError("timeout", Failure.TRANSIENT)
        return Completion(text="ok", model=self.model, input_tokens=1, output_tokens=1)

    def cost_usd(self, completion: Completion) -> float:
        return 0.0


def test_no_call_starts_after_the_turn_deadline(clock: FakeClock) -> None:
    slow = _Scripted("slow", clock, call_seconds=2.0, failures=5)
    spare = _Scripted("spare", clock, call_seconds=0.1, failures=0)
    prompt = Prompt(system="s", messages=(Message("user", "q"),))
    policy = chain.Policy(max_retries=5, backoff_base=0.5, cooldown_failures=10, turn_timeout=3.0)
    result = chain.run([slow, spare], lambda trimmed: prompt, lambda completion: completion.text, policy)
    # 2 s call, a backoff, a second call cut to the time left; then no time for a wait or another provider.
    assert slow.calls == 2
    assert spare.calls == 0
    assert result.text is None
    assert result.reasons == ["slow: timeout", "spare: turn timeout"]
    assert len(clock.sleeps) == 1


def test_cooldown_counts_failures_in_a_row_per_provider() -> None:
    board = chain.Cooldowns()
    policy = chain.Policy(cooldown_failures=2, cooldown_seconds=10)
    assert board.failed("a", 0.0, policy) is False
    board.succeeded("a")  # a success in between resets the count
    assert board.failed("a", 1.0, policy) is False
    assert board.failed("a", 2.0, policy) is True
    assert board.remaining("a", 5.0) == pytest.approx(7.0)
    assert board.remaining("b", 5.0) == 0.0
    assert board.remaining("a", 12.0) == 0.0
