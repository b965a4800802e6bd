"""bench/ai: what the AI engine itself costs per turn, and what one fallback adds.

A turn is the ai_engine handler from a search.completed envelope to the ai.response it publishes
(publishing captured), with 8 hits of real code from this repository and 6 exchanges of history.
Measured in this process:

- engine overhead per turn with an in-process fake provider (answers at once): the turn's time minus
  the time inside the provider. Beside it, the offline answerer's turn (no model at all) as baseline.
- the same through the official OpenAI and Anthropic SDKs against local servers that speak their APIs
  (tests/fakes): overhead = turn - time inside the SDK call. Beside the turn's total: the same request
  sent directly with the SDK, without the engine.
- the added latency of one fallback: a first provider that fails at once (HTTP 500, no retries), then
  the second answers; beside the second alone. Also: the first provider cooling down (skipped), and
  the default policy's first failing turn (two retries with backoff, then the cooldown).

    .venv/bin/python bench/ai.py                # full rounds (about a minute)
    .venv/bin/python bench/ai.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile  # noqa: E402

RESULTS = ROOT / "bench" / "results"

ANSWER_MARKDOWN = """\
## Where it happens

The **provider chain** lives in `{first}`: it retries transient failures with backoff and jitter,
cools a failing provider down, then moves on [2].

```python
for provider in providers:
    if cooldowns.remaining(provider.key, clock()) > 0:
        continue
```

- the prompt is built in {second}
- answers are checked against the sources before they are sent [3]
- costs come from the price table (see {third})
"""


def _env(tmp: str, **extra: str) -> None:
    for key in list(os.environ):
        if key.startswith(("OPENAI_", "ANTHROPIC_", "LOCAL_LLM_", "AI_")):
            del os.environ[key]
    os.environ.update({
        "REPOTALK_ENV": "test",
        "REPOTALK_DATA_DIR": f"{tmp}/data",
        "BROKER_URL": "memory://localhost/",
        "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
        "LOG_LEVEL": "WARNING",
        **extra,
    })
    from libs.common.lifecycle import reset_process_state

    reset_process_state()


def _search_envelope() -> Any:
    """A question with 8 hits of this repository's own code (40-line snippets) and 6 exchanges of history."""
    from libs.common.events import Envelope, HistoryItem, Hit, SearchCompleted, SearchRequested

    files = sorted((ROOT / "services" / "ai_engine").glob("*.py"))
    hits: list[Hit] = []
    for path in files:
        lines = path.read_text().split("\n")
        if len(lines) < 60:
            continue
        start = 20
        hits.append(Hit(
            repo="repotalk", path=str(path.relative_to(ROOT)), line=start + 1, end_line=start + 40,
            symbol=path.stem, kind="function", language="python", score=10.0 - len(hits),
            snippet="\n".join(lines[start:start + 40]),
        ))
        if len(hits) == 8:
            break
    history = []
    for index in range(6):
        history.append(HistoryItem(role="user", text=f"and what about step {index} of the chain?"))
        history.append(HistoryItem(role="assistant", text=f"Step {index} is handled in {hits[index % 8].location}: "
                                   + "it checks the provider and records what the call cost. " * 6))
    request = SearchRequested(session_id="sess", user_id="u_bench", query="how does the provider chain fall back?",
                              history=history)
    completed = SearchCompleted(request=request, hits=hits, took_ms=12.0, kinds=["symbol", "keyword"])
    return Envelope.new(completed, correlation_id="SMbench", source="code_search")


def _answer_text(envelope: Any) -> str:
    hits = envelope.data().hits
    return ANSWER_MARKDOWN.format(first=hits[0].location, second=hits[1].location, third=hits[2].location)


@dataclass
class Turn:
    total_ms: float
    provider_ms: float  # calls and backoff
    answer_call_ms: float  # the call that gave the answer
    answerer: str

    @property
    def rest_ms(self) -> float:
        """Everything but the answering call: the engine, and any failed call, wait or skip before it."""
        return self.total_ms - self.answer_call_ms


def _turn(envelope: Any) -> Turn:
    from libs.common import bus
    from libs.common.events import AIResponse
    from services.ai_engine import worker

    with bus.capture_published() as sent:
        started = time.perf_counter()
        worker.handle_search_completed(envelope)
        total = (time.perf_counter() - started) * 1000
    response = sent[0].data()
    assert isinstance(response, AIResponse)
    answer_call = sum(a.latency_ms for a in response.attempts if a.outcome == "ok")
    return Turn(total, response.provider_ms, answer_call, response.answerer)


def _turns(envelope: Any, rounds: int, expect: str, before: Callable[[], None] | None = None) -> list[Turn]:
    for _ in range(min(20, rounds)):  # warm-up: imports, connection pools, caches
        if before:
            before()
        _turn(envelope)
    out = []
    for _ in range(rounds):
        if before:
            before()
        turn = _turn(envelope)
        if turn.answerer != expect:
            raise RuntimeError(f"expected an answer from {expect}, got {turn.answerer}")
        out.append(turn)
    return out


@contextmanager
def _in_process_provider(text: str) -> Iterator[None]:
    """providers.configured -> one provider that answers at once with ``text`` (no SDK, no HTTP)."""
    from services.ai_engine import providers
    from services.ai_engine.prompting import Prompt
    from services.ai_engine.provider import Completion, Provider

    class Instant(Provider):
        name, model, base_url, timeout = "openai", "gpt-4o-mini", "", 30.0

        def complete(self, prompt: Prompt, timeout: float) -> Completion:
            return Completion(text=text, model=self.model, input_tokens=prompt.tokens, output_tokens=400)

        def cost_usd(self, completion: Completion) -> float:
            return 0.0

    original = providers.configured
    providers.configured = lambda ai: [Instant()]
    try:
        yield
    finally:
        providers.configured = original


def _stats(values: Sequence[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 95)


@dataclass
class Row:
    metric: str
    measured: tuple[float, float]
    baseline_label: str
    baseline: tuple[float, float] | None

    def ratios(self) -> tuple[str, str]:
        if not self.baseline:
            return "", ""
        (m50, m95), (b50, b95) = self.measured, self.baseline
        return (f"{m50 / b50:.2f}x" if b50 else "", f"{m95 / b95:.2f}x" if b95 else "")


def print_rows(rows: Sequence[Row]) -> None:
    header = (f"{'metric':<46} {'p50 ms':>9} {'p95 ms':>9}   {'baseline':<34} {'p50 ms':>9} {'p95 ms':>9}"
              f" {'x p50':>7} {'x p95':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        base50, base95 = ("", "") if row.baseline is None else (f"{row.baseline[0]:.3f}", f"{row.baseline[1]:.3f}")
        r50, r95 = row.ratios()
        print(f"{row.metric:<46} {row.measured[0]:>9.3f} {row.measured[1]:>9.3f}   {row.baseline_label:<34}"
              f" {base50:>9} {base95:>9} {r50:>7} {r95:>7}")


def _direct_openai(base_url: str, envelope: Any) -> Callable[[], None]:
    """The turn's chat completion sent straight through the SDK: what a turn costs without the engine."""
    import openai

    from libs.common.settings import get_settings
    from services.ai_engine.prompting import build_prompt

    messages = build_prompt(envelope.data(), get_settings().ai).as_openai()
    client = openai.OpenAI(api_key="sk-bench", base_url=base_url, max_retries=0, timeout=30)

    def call() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=1024)  # type: ignore[arg-type]

    return call


def _direct_anthropic(base_url: str, envelope: Any) -> Callable[[], None]:
    import anthropic

    from libs.common.settings import get_settings
    from services.ai_engine.prompting import build_prompt

    prompt = build_prompt(envelope.data(), get_settings().ai)
    client = anthropic.Anthropic(api_key="sk-bench", base_url=base_url, max_retries=0, timeout=30)

    def call() -> None:
        client.messages.create(model="claude-haiku-4-5", system=prompt.system,
                               messages=prompt.as_anthropic(), max_tokens=1024)  # type: ignore[arg-type]

    return call


def _paired(envelope: Any, rounds: int, expect: str, refill: Callable[[], None],
            direct: Callable[[], None]) -> tuple[list[Turn], list[float]]:
    """Engine turns and direct SDK calls, alternated so both see the same machine (it is shared)."""
    turns: list[Turn] = []
    direct_ms: list[float] = []
    warmup = min(20, rounds)
    for index in range(rounds + warmup):
        refill()
        started = time.perf_counter()
        direct()
        elapsed = (time.perf_counter() - started) * 1000
        refill()
        turn = _turn(envelope)
        if turn.answerer != expect:
            raise RuntimeError(f"expected an answer from {expect}, got {turn.answerer}")
        if index >= warmup:
            direct_ms.append(elapsed)
            turns.append(turn)
    return turns, direct_ms


def measure(rounds: int, slow_rounds: int) -> tuple[list[Row], dict[str, Any]]:
    from services.ai_engine import chain
    from tests.fakes.anthropic_server import FakeAnthropic
    from tests.fakes.openai_server import FakeOpenAI

    rows: list[Row] = []
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="repotalk-bench-ai-") as tmp:
        envelope = _search_envelope()
        text = _answer_text(envelope)

        # Baseline: the offline answerer (no provider configured).
        _env(tmp)
        offline = _stats([t.total_ms for t in _turns(envelope, rounds, "offline")])

        # Engine overhead with an in-process provider.
        _env(tmp)
        with _in_process_provider(text):
            turns = _turns(envelope, rounds, "openai")
        overhead = _stats([t.total_ms - t.provider_ms for t in turns])
        rows.append(Row("engine overhead/turn, in-process provider", overhead, "offline answerer turn", offline))

        # Through the SDKs against local servers.
        with FakeOpenAI() as fake_openai, FakeAnthropic() as fake_anthropic:
            def openai_reply() -> None:
                fake_openai.reply(text, prompt_tokens=3000, completion_tokens=400)

            def anthropic_reply() -> None:
                fake_anthropic.reply(text, input_tokens=3000, output_tokens=400)

            _env(tmp, OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=fake_openai.base_url, AI_PROVIDERS="openai")
            turns, direct_ms = _paired(envelope, rounds, "openai", openai_reply,
                                       _direct_openai(fake_openai.base_url, envelope))
            direct = _stats(direct_ms)
            rows.append(Row("engine overhead/turn, OpenAI SDK + fake server",
                            _stats([t.total_ms - t.provider_ms for t in turns]), "offline answerer turn", offline))
            rows.append(Row("turn total, OpenAI SDK + fake server", _stats([t.total_ms for t in turns]),
                            "direct SDK call, same request", direct))
            openai_turns = turns
            openai_alone = [t.total_ms for t in turns]

            _env(tmp, ANTHROPIC_API_KEY="sk-bench", ANTHROPIC_BASE_URL=fake_anthropic.base_url,
                 AI_PROVIDERS="anthropic")
            turns, direct_ms = _paired(envelope, rounds, "anthropic", anthropic_reply,
                                       _direct_anthropic(fake_anthropic.base_url, envelope))
            direct = _stats(direct_ms)
            rows.append(Row("engine overhead/turn, Anthropic SDK + fake server",
                            _stats([t.total_ms - t.provider_ms for t in turns]), "offline answerer turn", offline))
            rows.append(Row("turn total, Anthropic SDK + fake server", _stats([t.total_ms for t in turns]),
                            "direct SDK call, same request", direct))
            assert fake_openai.pending == fake_anthropic.pending == 0

            # One fallback: anthropic fails at once (HTTP 500, no retries), openai answers. Compared on
            # the turn minus the answering call, so the second provider's own noise stays out of it.
            plain_rest = [t.rest_ms for t in openai_turns]
            plain_p50 = percentile(plain_rest, 50)
            _env(tmp, OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=fake_openai.base_url,
                 ANTHROPIC_API_KEY="sk-bench", ANTHROPIC_BASE_URL=fake_anthropic.base_url,
                 AI_PROVIDERS="anthropic,openai", AI_MAX_RETRIES="0", AI_COOLDOWN_FAILURES="1000000")

            def fail_then_answer() -> None:
                fake_anthropic.error(500)
                openai_reply()

            turns = _turns(envelope, rounds, "openai", fail_then_answer)
            rows.append(Row("one fallback (500, no retry): turn - answer call", _stats([t.rest_ms for t in turns]),
                            "no fallback: turn - answer call", _stats(plain_rest)))
            rows.append(Row("  added latency of the fallback", _stats([t.rest_ms - plain_p50 for t in turns]),
                            "whole turn, no fallback", _stats(openai_alone)))

            # The failing provider cooling down: skipped without a request.
            _env(tmp, OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=fake_openai.base_url,
                 ANTHROPIC_API_KEY="sk-bench", ANTHROPIC_BASE_URL=fake_anthropic.base_url,
                 AI_PROVIDERS="anthropic,openai", AI_COOLDOWN_SECONDS="3600")
            chain.COOLDOWNS.reset()
            for _ in range(3):
                fake_anthropic.error(500)
            openai_reply()
            with _no_backoff():
                _turn(envelope)  # three failures: anthropic now cools down
            turns = _turns(envelope, rounds, "openai", openai_reply)
            rows.append(Row("provider cooling down (skipped): turn - answer call",
                            _stats([t.rest_ms for t in turns]), "no fallback: turn - answer call", _stats(plain_rest)))

            # Default policy, the first failing turn: 2 retries with backoff (0.5 s base, jitter), then on.
            def first_failure() -> None:
                chain.COOLDOWNS.reset()
                for _ in range(3):
                    fake_anthropic.error(500)
                openai_reply()

            turns = _turns(envelope, slow_rounds, "openai", first_failure)
            rows.append(Row("default policy, 3 x 500: turn - answer call", _stats([t.rest_ms for t in turns]),
                            "no fallback: turn - answer call", _stats(plain_rest)))
            chain.COOLDOWNS.reset()
            assert fake_openai.pending == fake_anthropic.pending == 0
    raw["rows"] = [
        {"metric": r.metric.strip(), "p50_ms": r.measured[0], "p95_ms": r.measured[1],
         "baseline": r.baseline_label, "baseline_p50_ms": r.baseline[0] if r.baseline else None,
         "baseline_p95_ms": r.baseline[1] if r.baseline else None}
        for r in rows
    ]
    return rows, raw


@contextmanager
def _no_backoff() -> Iterator[None]:
    from services.ai_engine import chain

    original = chain.sleep
    chain.sleep = lambda seconds: None
    try:
        yield
    finally:
        chain.sleep = original


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400, help="turns per measurement")
    parser.add_argument("--slow-rounds", type=int, default=12, help="turns of the default-policy failure (~1 s each)")
    parser.add_argument("--quick", action="store_true", help="100 turns, 5 slow ones")
    parser.add_argument("--json", type=Path, help="also write the figures here (default bench/results/)")
    args = parser.parse_args(argv)
    rounds, slow = (100, 5) if args.quick else (args.rounds, args.slow_rounds)

    import logging

    logging.disable(logging.WARNING)  # the chain's warnings on scripted failures are expected here
    rows, raw = measure(rounds, slow)
    print(f"\nbench/ai: ai_engine per turn ({rounds} turns per row; 8 hits, 6 exchanges of history; "
          f"{os.cpu_count()} cores)")
    print_rows(rows)
    out = args.json or RESULTS / f"ai-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": rounds, "slow_rounds": slow, **raw}, indent=2))
    print(f"\nfigures written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
