"""Each provider through its official SDK against a local server that speaks its API: what the server
received (model, prompt, sources, history), and what the user gets (WhatsApp formatting, checked
citations) with its accounting."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.common.events import HistoryItem
from services.ai_engine import pricing
from services.ai_engine.prompting import SYSTEM_PROMPT
from tests.conftest import apply_env
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.services.ai_engine.helpers import BEST, WEBHOOK, answer, completed, envelope, hits

HISTORY = [
    HistoryItem(role="user", text="what does the gateway do?"),
    HistoryItem(role="assistant", text="It receives Twilio webhooks."),
]


@pytest.fixture
def fake_openai(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        apply_env(monkeypatch, OPENAI_API_KEY="sk-test-key", OPENAI_BASE_URL=fake.base_url, OPENAI_MODEL="gpt-4o-mini",
                  AI_TIMEOUT="5")
        yield fake


@pytest.fixture
def fake_anthropic(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        apply_env(monkeypatch, ANTHROPIC_API_KEY="sk-ant-test", ANTHROPIC_BASE_URL=fake.base_url,
                  ANTHROPIC_MODEL="claude-haiku-4-5", AI_TIMEOUT="5")
        yield fake


def _assert_sources(question: str) -> None:
    assert question.startswith("Sources:\n\n[1] repotalk/services/gateway/signature.py:41-46 "
                               "(function, verify_signature, python)\n```\n")
    assert "[2] repotalk/services/gateway/webhooks.py:88-120" in question
    assert "[3] repotalk/docs/twilio.md:12-20" in question
    assert "return hmac.compare_digest(expected, signature)" in question
    assert question.endswith("Question: where do we validate the twilio signature?")


def _assert_system(system: str) -> None:
    assert system.startswith(SYSTEM_PROMPT.split("\n")[0])
    assert f"(for example `{BEST}`)" in system  # the citation format, shown with a real source
    assert "say so plainly" in system  # ...and what to do when the code does not answer the question
    assert "Never cite a file or line that is not in the sources" in system
    assert "No headings, no tables" in system
    assert "under 3000 characters" in system


def test_openai_request_carries_model_prompt_sources_and_history(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply(f"The signature is checked in `{BEST}`.", prompt_tokens=812, completion_tokens=64)
    response, _ = answer(envelope(completed(history=HISTORY)))
    assert response.answerer == "openai"
    assert len(fake_openai.requests) == 1
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-key"
    assert sent.headers["x-stainless-retry-count"] == "0"
    body = sent.json
    assert body["model"] == "gpt-4o-mini"
    assert body["max_tokens"] == 1024  # a base_url may be any compatible server: the portable parameter
    assert "stream" not in body
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    _assert_system(messages[0]["content"])
    assert messages[1]["content"] == "what does the gateway do?"
    assert messages[2]["content"] == "It receives Twilio webhooks."
    _assert_sources(messages[3]["content"])


def test_openai_answer_is_whatsapp_formatted_with_usage_and_cost(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply(
        "## Signature check\n\n**Twilio** signatures are verified in "
        f"{BEST}.\n\n| File | Role |\n|---|---|\n| signature.py | verify |\n",
        model="gpt-4o-mini-2024-07-18", prompt_tokens=1000, completion_tokens=200,
    )
    response, _ = answer(envelope(completed()))
    assert response.answer == "\n".join([
        "*Signature check*",
        "",
        f"*Twilio* signatures are verified in {BEST}.",
        "",
        "*File · Role*",
        "• signature.py — verify",
    ])
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert (response.input_tokens, response.output_tokens) == (1000, 200)
    # gpt-4o-mini: $0.15 in / $0.60 out per million tokens.
    assert response.cost_usd == pytest.approx(0.00015 + 0.00012)
    assert response.latency_ms > 0
    assert response.provider_ms > 0
    assert response.citations == [BEST]
    assert response.fallback_reason is None
    assert (response.retries, response.fallbacks) == (0, 0)
    [attempt] = response.attempts
    assert (attempt.provider, attempt.model, attempt.outcome) == ("openai", "gpt-4o-mini-2024-07-18", "ok")
    assert attempt.cost_usd == response.cost_usd


def test_anthropic_request_and_answer(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply(
        f"### Where\nIt is verified in **verify_signature** ({BEST}), called from the webhook [2].",
        input_tokens=2000, output_tokens=100,
    )
    response, _ = answer(envelope(completed(history=HISTORY)))
    assert len(fake_anthropic.requests) == 1
    sent = fake_anthropic.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == "Bearer sk-ant-test"
    assert sent.headers["anthropic-version"]
    assert sent.headers["x-stainless-retry-count"] == "0"
    body = sent.json
    assert body["model"] == "claude-haiku-4-5"
    assert body["max_tokens"] == 1024
    _assert_system(body["system"])
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == "what does the gateway do?"
    _assert_sources(body["messages"][2]["content"])

    assert response.answerer == "anthropic"
    assert response.model == "claude-haiku-4-5-20251001"
    # The source number the user cannot see becomes the source's location.
    assert response.answer == (
        f"*Where*\nIt is verified in *verify_signature* ({BEST}), called from the webhook {WEBHOOK}."
    )
    assert response.citations == [BEST, WEBHOOK]
    assert (response.input_tokens, response.output_tokens) == (2000, 100)
    # claude-haiku-4-5: $1 in / $5 out per million tokens.
    assert response.cost_usd == pytest.approx(0.002 + 0.0005)
    assert [a.outcome for a in response.attempts] == ["ok"]


def test_local_server_through_base_url(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI() as local:
        apply_env(monkeypatch, LOCAL_LLM_BASE_URL=local.base_url, LOCAL_LLM_MODEL="qwen2.5-coder:7b")
        local.reply(f"See `{BEST}`.", model="qwen2.5-coder:7b", prompt_tokens=900, completion_tokens=30)
        response, _ = answer(envelope(completed()))
    assert response.answerer == "local"
    assert response.model == "qwen2.5-coder:7b"
    assert response.answer == f"See `{BEST}`."
    sent = local.requests[0]
    assert sent.json["model"] == "qwen2.5-coder:7b"
    assert sent.headers["authorization"] == "Bearer local"  # the SDK wants a key; local servers ignore it
    assert (response.input_tokens, response.output_tokens) == (900, 30)
    assert response.cost_usd == 0.0  # nobody bills a local model, unless AI_PRICES says so


def test_local_model_priced_through_the_table(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI() as local:
        apply_env(monkeypatch, LOCAL_LLM_BASE_URL=local.base_url, LOCAL_LLM_MODEL="llama3.1:70b",
                  AI_PRICES="llama3.1=0.2/0.4")
        local.reply(f"See `{BEST}`.", model="llama3.1:70b", prompt_tokens=1_000_000, completion_tokens=500_000)
        response, _ = answer(envelope(completed()))
    assert response.cost_usd == pytest.approx(0.2 + 0.2)


def test_hallucinated_citations_are_removed(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply(
        f"It happens in `{BEST}` (and in repotalk/services/gateway/crypto.py:12).\n"
        "- repotalk/libs/imaginary.py:5\n"
        "- repotalk/services/gateway/webhooks.py:95 calls it, see also [7]"
    )
    response, _ = answer(envelope(completed()))
    assert response.answer == "\n".join([
        f"It happens in `{BEST}`.",
        "• repotalk/services/gateway/webhooks.py:95 calls it",
    ])
    assert "crypto.py" not in response.answer
    assert "imaginary.py" not in response.answer
    assert "[7]" not in response.answer
    assert response.citations == [BEST, "repotalk/services/gateway/webhooks.py:95"]


def test_answers_stay_within_the_configured_length(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, AI_MAX_ANSWER_CHARS="300")
    fake_openai.reply(f"See {BEST}.\n\n```python\n" + "\n".join(f"x{i} = {i}" for i in range(200)) + "\n```")
    response, _ = answer(envelope(completed()))
    assert response.answerer == "openai"
    assert len(response.answer) <= 300
    assert response.answer.count("```") % 2 == 0
    assert hits()[0].location in response.answer
    assert "under 300 characters" in fake_openai.requests[0].json["messages"][0]["content"]


def test_no_markdown_survives_in_an_answer(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply(
        "# Title\n\n1. **first** step in [the docs](https://example.com)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        f"```python\ndef f():\n    return 1\n```\n\nSee {BEST}."
    )
    response, _ = answer(envelope(completed()))
    text = response.answer
    assert not re.search(r"^#", text, re.M)
    assert "**" not in text
    assert not re.search(r"^\s*\|", text, re.M)
    assert "](" not in text
    assert "```\ndef f():\n    return 1\n```" in text  # the language tag would show as text in WhatsApp
    assert text.startswith("*Title*")


def test_price_table_matches_dated_snapshots_and_overrides() -> None:
    assert pricing.price_for("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert pricing.price_for("gpt-4o-2024-11-20") == (2.50, 10.00)
    assert pricing.price_for("claude-haiku-4-5-20251001") == (1.00, 5.00)
    assert pricing.price_for("claude-opus-4-5-20251101") == (5.00, 25.00)
    assert pricing.price_for("claude-opus-4-1-20250805") == (15.00, 75.00)
    assert pricing.price_for("some-unknown-model") == (0.0, 0.0)
    assert pricing.price_for("gpt-4o-mini", "gpt-4o-mini=0.1/0.2") == (0.1, 0.2)
    assert pricing.price_for("gpt-4o-mini", vendor_prices=False) == (0.0, 0.0)
    assert pricing.cost_usd("gpt-4o-mini", 1000, 200) == pytest.approx(0.00027)
    with pytest.raises(ValueError, match="model=input/output"):
        pricing.parse_prices("gpt-4o=1,claude=2/3")


def test_the_readme_lists_the_default_price_table() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## AI providers", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[float, float]] = {}
    for line in section.split("\n"):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for start in (0, 4):
            chunk = cells[start:start + 3]
            if len(chunk) == 3 and chunk[0].startswith("`") and re.fullmatch(r"[\d.]+", chunk[1]):
                for model in re.findall(r"`([^`]+)`", chunk[0]):
                    rows[model] = (float(chunk[1]), float(chunk[2]))
    assert rows == pricing.DEFAULT_PRICES
