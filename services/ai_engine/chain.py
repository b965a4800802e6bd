"""The provider chain: each provider in order, one retry loop per provider, cooldown of a provider
that keeps failing, and a result that says what every call cost and why providers were left behind.

- Transient failures (timeout, connection error, 408, 409, 429, 5xx) are retried up to AI_MAX_RETRIES
  times with exponential backoff and jitter; a ``retry-after`` is honoured when it is short, and cools
  the provider down for that long when it is not (nobody waits two minutes on a phone).
- A context-too-long error is retried once with a trimmed prompt.
- Anything else moves on to the next provider at once.
- AI_COOLDOWN_FAILURES failed calls in a row cool a provider down for AI_COOLDOWN_SECONDS: turns skip
  it instead of paying its timeouts. After the cooldown one call probes it; a failure cools it again,
  a success clears it. The state is per process (each worker learns on its own, as circuit breakers do).
- The whole turn has AI_TURN_TIMEOUT: no call or backoff starts that could not end before it.

The caller answers with the offline answerer when the result has no text.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.trace import Span, SpanKind

from libs.common import metrics, telemetry
from libs.common.events import AIAttempt
from libs.common.settings import AISettings
from services.ai_engine.prompting import Prompt
from services.ai_engine.provider import Completion, Failure, Provider, ProviderError

log = logging.getLogger(__name__)

# Indirections the tests replace: no real waiting, and a clock they can move past a cooldown.
sleep: Callable[[float], None] = time.sleep
clock: Callable[[], float] = time.monotonic
_jitter = random.Random()

COOLING_DOWN = "cooling down"
OUT_OF_TIME = "turn timeout"


@dataclass(frozen=True)
class Policy:
    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 10.0
    cooldown_failures: int = 3
    cooldown_seconds: float = 60.0
    turn_timeout: float = 60.0

    @classmethod
    def from_settings(cls, ai: AISettings) -> Policy:
        return cls(
            max_retries=max(0, ai.max_retries),
            backoff_base=max(0.0, ai.backoff_base),
            backoff_max=max(0.0, ai.backoff_max),
            retry_after_max=max(0.0, ai.retry_after_max),
            cooldown_failures=max(1, ai.cooldown_failures),
            cooldown_seconds=max(0.0, ai.cooldown_seconds),
            turn_timeout=max(0.0, ai.turn_timeout),
        )


def backoff_delay(retry: int, policy: Policy, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter in [delay/2, delay] ("equal jitter": spread, never near zero),
    never shorter than the server's ``retry-after``."""
    delay = min(policy.backoff_max, policy.backoff_base * (2**retry))
    delay = delay / 2 + _jitter.uniform(0, delay / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


@dataclass
class _Health:
    failures: int = 0  # failed calls in a row
    until: float = 0.0  # cooling down until this clock() reading


class Cooldowns:
    """Which providers are cooling down, shared by the worker's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._health: dict[str, _Health] = {}

    def remaining(self, key: str, now: float) -> float:
        with self._lock:
            health = self._health.get(key)
            return max(0.0, health.until - now) if health else 0.0

    def failed(self, key: str, now: float, policy: Policy) -> bool:
        """Count a failed call; True when the provider is now cooling down."""
        with self._lock:
            health = self._health.setdefault(key, _Health())
            health.failures += 1
            # The count is kept through the cooldown, so the first call after it is a probe: one
            # more failure and the provider cools down again at once.
            if health.failures >= policy.cooldown_failures:
                health.until = max(health.until, now + policy.cooldown_seconds)
                return True
            return False

    def hold(self, key: str, until: float) -> None:
        """Cool down until ``until`` (a long retry-after), whatever the failure count."""
        with self._lock:
            health = self._health.setdefault(key, _Health())
            health.until = max(health.until, until)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._health.pop(key, None)

    def reset(self) -> None:
        with self._lock:
            self._health.clear()


COOLDOWNS = Cooldowns()


class Unusable(Exception):
    """The model answered, but nothing of it can be sent (e.g. only invented citations)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ChainResult:
    text: str | None = None  # the accepted answer; None: answer offline
    provider: str | None = None
    model: str | None = None
    attempts: list[AIAttempt] = field(default_factory=list)
    retries: int = 0
    reasons: list[str] = field(default_factory=list)  # "openai: HTTP 503", one per provider left behind
    provider_ms: float = 0.0

    @property
    def fallbacks(self) -> int:
        return len(self.reasons)

    @property
    def input_tokens(self) -> int:
        return sum(a.input_tokens for a in self.attempts)

    @property
    def output_tokens(self) -> int:
        return sum(a.output_tokens for a in self.attempts)

    @property
    def cost_usd(self) -> float:
        return round(sum(a.cost_usd for a in self.attempts), 8)

    @property
    def paid_model(self) -> str | None:
        """The model of the last call that returned tokens (what an offline answer still paid for)."""
        paid = [a for a in self.attempts if a.input_tokens or a.output_tokens]
        return paid[-1].model if paid else None

    def left_behind(self, provider: Provider, reason: str) -> None:
        self.reasons.append(f"{provider.name}: {reason}")
        log.warning("provider %s (%s) left behind: %s", provider.name, provider.model, reason)


def _call(provider: Provider, prompt: Prompt, timeout: float, result: ChainResult) -> Completion:
    # openai and anthropic speak through httpx2, which no OpenTelemetry instrumentation covers: each attempt
    # is a client span of its own (retries and fallbacks show as siblings under the ai_engine task).
    attempt = 1 + sum(1 for a in result.attempts if a.provider == provider.name)
    attributes = {"gen_ai.system": provider.name, "gen_ai.request.model": provider.model,
                  "repotalk.ai.attempt": attempt, "repotalk.ai.timeout_s": timeout}
    with telemetry.span(f"ai.{provider.name}.complete", SpanKind.CLIENT, attributes) as current:
        started = time.perf_counter()
        try:
            completion = provider.complete(prompt, timeout)
        except ProviderError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            result.provider_ms += elapsed
            result.attempts.append(AIAttempt(
                provider=provider.name, model=provider.model, outcome=exc.reason, latency_ms=round(elapsed, 3)))
            _observe(provider, result.attempts[-1], current, exc.kind.value)
            raise
        elapsed = (time.perf_counter() - started) * 1000
        result.provider_ms += elapsed
        result.attempts.append(AIAttempt(
            provider=provider.name, model=completion.model, outcome="ok", latency_ms=round(elapsed, 3),
            input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
            cost_usd=provider.cost_usd(completion),
        ))
        _observe(provider, result.attempts[-1], current, None)
    return completion


def _observe(provider: Provider, attempt: AIAttempt, current: Span | None, failure: str | None) -> None:
    """One provider call into the span and the provider metrics."""
    metrics.PROVIDER_CALLS.labels(provider.name, attempt.model).inc()
    metrics.observe(metrics.PROVIDER_LATENCY.labels(provider.name), attempt.latency_ms / 1000)
    telemetry.set_attributes(current, **{
        "repotalk.ai.outcome": attempt.outcome, "gen_ai.response.model": attempt.model,
        "gen_ai.usage.input_tokens": attempt.input_tokens, "gen_ai.usage.output_tokens": attempt.output_tokens,
        "repotalk.ai.cost_usd": attempt.cost_usd,
    })
    if failure is not None:
        metrics.PROVIDER_ERRORS.labels(provider.name, attempt.outcome[:40]).inc()
        telemetry.set_attributes(current, **{"repotalk.ai.failure": failure})
        telemetry.mark_error(current, attempt.outcome)
        return
    metrics.PROVIDER_TOKENS.labels(provider.name, attempt.model, "input").inc(attempt.input_tokens)
    metrics.PROVIDER_TOKENS.labels(provider.name, attempt.model, "output").inc(attempt.output_tokens)
    metrics.PROVIDER_COST.labels(provider.name, attempt.model).inc(attempt.cost_usd)


def _wait(delay: float, result: ChainResult) -> None:
    started = time.perf_counter()
    sleep(delay)
    result.provider_ms += (time.perf_counter() - started) * 1000


class _OutOfTime(Exception):
    """The turn's deadline has passed: no provider gets another call."""


def _after_failure(
    provider: Provider, exc: ProviderError, retry: int, policy: Policy, cooldowns: Cooldowns, deadline: float
) -> tuple[float | None, str]:
    """How long to wait before calling ``provider`` again (None: leave it), and the reason to record."""
    cooled = cooldowns.failed(provider.key, clock(), policy)
    if exc.retry_after is not None and exc.retry_after > policy.retry_after_max:
        cooldowns.hold(provider.key, clock() + exc.retry_after)
        return None, f"{exc.reason} (retry after {exc.retry_after:g} s)"
    if exc.kind is not Failure.TRANSIENT or cooled or retry >= policy.max_retries:
        return None, exc.reason
    delay = backoff_delay(retry, policy, exc.retry_after)
    return (delay if clock() + delay < deadline else None), exc.reason


def _ask(
    provider: Provider,
    prompt: Callable[[bool], Prompt],
    accept: Callable[[Completion], str],
    policy: Policy,
    cooldowns: Cooldowns,
    deadline: float,
    result: ChainResult,
) -> tuple[Completion, str] | None:
    """One provider and its retry loop: the accepted completion and its text, or None once the reason
    it was left is recorded. Raises _OutOfTime."""
    trimmed = False
    retry = 0
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise _OutOfTime
        try:
            completion = _call(provider, prompt(trimmed), min(provider.timeout, remaining), result)
        except ProviderError as exc:
            if exc.kind is Failure.CONTEXT and not trimmed:
                trimmed = True
                result.retries += 1
                continue
            if exc.kind is Failure.CONTEXT:  # still too long once trimmed: another model may take it
                result.left_behind(provider, exc.reason)
                return None
            delay, reason = _after_failure(provider, exc, retry, policy, cooldowns, deadline)
            if delay is None:
                result.left_behind(provider, reason)
                return None
            log.info("provider %s: %s, retrying in %.2f s", provider.name, exc.reason, delay)
            _wait(delay, result)
            retry += 1
            result.retries += 1
            continue
        cooldowns.succeeded(provider.key)
        try:
            return completion, accept(completion)
        except Unusable as exc:
            result.attempts[-1] = result.attempts[-1].model_copy(update={"outcome": exc.reason})
            result.left_behind(provider, exc.reason)
            return None


def run(
    providers: Sequence[Provider],
    prompt_for: Callable[[bool], Prompt],
    accept: Callable[[Completion], str],
    policy: Policy,
    cooldowns: Cooldowns = COOLDOWNS,
) -> ChainResult:
    """Ask each provider in turn until one gives an answer ``accept`` takes (it returns the text to send
    or raises Unusable). ``prompt_for(trimmed)`` builds the prompt, smaller when ``trimmed``."""
    result = ChainResult()
    prompts: dict[bool, Prompt] = {}
    deadline = clock() + policy.turn_timeout

    def prompt(trimmed: bool) -> Prompt:
        if trimmed not in prompts:
            prompts[trimmed] = prompt_for(trimmed)
        return prompts[trimmed]

    for provider in providers:
        if cooldowns.remaining(provider.key, clock()) > 0:
            result.left_behind(provider, COOLING_DOWN)
            continue
        try:
            answered = _ask(provider, prompt, accept, policy, cooldowns, deadline, result)
        except _OutOfTime:
            result.left_behind(provider, OUT_OF_TIME)
            return result
        if answered is not None:
            completion, result.text = answered
            result.provider = provider.name
            result.model = completion.model
            return result
    return result
