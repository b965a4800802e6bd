"""The prompt: history within its token budget and in an order every API accepts, sources numbered and
shortened as their budget runs out, and a smaller prompt for a context-too-long retry."""

from __future__ import annotations

from libs.common.events import HistoryItem, Hit
from libs.common.settings import AISettings
from services.ai_engine.prompting import Message, Role, build_prompt, estimate_tokens, format_sources, trim_history
from tests.services.ai_engine.helpers import BEST, completed, hits


def _ai(**fields: object) -> AISettings:
    return AISettings(**fields)  # type: ignore[arg-type]


def _item(role: Role, words: int, tag: str) -> HistoryItem:
    return HistoryItem(role=role, text=f"{tag} " + "word " * words)


def test_history_keeps_the_most_recent_exchanges_within_the_budget() -> None:
    history = [_item("user" if i % 2 == 0 else "assistant", 60, f"m{i}") for i in range(10)]
    kept = trim_history(history, max_tokens=500)
    assert sum(estimate_tokens(m.content) for m in kept) <= 500
    assert kept[-1].content.startswith("m9 ")
    assert kept[0].role == "user"
    tags = [m.content.split()[0] for m in kept]
    assert tags == [f"m{i}" for i in range(10 - len(kept), 10)]  # contiguous, oldest dropped first
    assert len(kept) < 10


def test_history_alternates_and_starts_with_the_user() -> None:
    history = [
        HistoryItem(role="assistant", text="a greeting nobody asked for"),
        HistoryItem(role="user", text="first"),
        HistoryItem(role="user", text="second, before any answer"),
        HistoryItem(role="assistant", text="an answer"),
        HistoryItem(role="assistant", text="a follow-up"),
        HistoryItem(role="user", text="   "),
    ]
    kept = trim_history(history, max_tokens=1000)
    assert kept == [
        Message("user", "first\n\nsecond, before any answer"),
        Message("assistant", "an answer\n\na follow-up"),
    ]


def test_a_long_last_answer_is_shortened_rather_than_lost() -> None:
    history = [_item("user", 50, "old"), _item("assistant", 50, "older-answer"), _item("user", 5, "q"),
               _item("assistant", 2000, "long")]
    kept = trim_history(history, max_tokens=300)
    assert [m.role for m in kept] == ["user", "assistant"]  # the last exchange, nothing older
    assert kept[0].content.startswith("q ")
    assert kept[1].content.startswith("long ")
    assert kept[1].content.endswith("…")
    assert sum(estimate_tokens(m.content) for m in kept) <= 300


def test_prompt_ends_with_the_sources_and_the_question() -> None:
    history = [HistoryItem(role="user", text="what does the gateway do?"),
               HistoryItem(role="assistant", text="It receives webhooks.")]
    prompt = build_prompt(completed(history=history), _ai())
    assert [m.role for m in prompt.messages] == ["user", "assistant", "user"]
    assert prompt.as_openai()[0] == {"role": "system", "content": prompt.system}
    assert prompt.as_anthropic()[0] == {"role": "user", "content": "what does the gateway do?"}
    assert prompt.messages[-1].content.endswith("Question: where do we validate the twilio signature?")
    assert BEST in prompt.system


def test_an_unanswered_question_joins_this_one() -> None:
    history = [HistoryItem(role="user", text="is it in the gateway?")]
    prompt = build_prompt(completed(history=history), _ai())
    assert len(prompt.messages) == 1
    assert prompt.messages[0].content.startswith("is it in the gateway?\n\nSources:")


def test_sources_are_numbered_in_rank_order_with_their_lines() -> None:
    text = format_sources(hits(), max_tokens=6000)
    assert text.index("[1] repotalk/services/gateway/signature.py:41-46") < text.index(
        "[2] repotalk/services/gateway/webhooks.py:88-120") < text.index("[3] repotalk/docs/twilio.md:12-20")
    single = Hit(repo="r", path="a.py", line=7, end_line=7, snippet="x = 1")
    assert format_sources([single], 100).startswith("[1] r/a.py:7\n```\nx = 1\n```")


def test_sources_shrink_to_their_budget_best_first() -> None:
    many = [Hit(repo="r", path=f"f{i}.py", line=1, end_line=300, symbol=f"s{i}", kind="function",
                snippet="\n".join(f"line_{i}_{n} = {n}" for n in range(300))) for i in range(10)]
    text = format_sources(many, max_tokens=2000)
    assert estimate_tokens(text) <= 2000
    blocks = text.split("\n\n")
    numbers = [int(block[1:block.index("]")]) for block in blocks]
    assert numbers == list(range(1, len(blocks) + 1))  # a prefix of the ranking, in order
    assert 3 <= len(blocks) < 10
    assert "line_0_59 = 59" in blocks[0] and "line_0_60" not in blocks[0]  # the best keeps 60 lines
    assert blocks[-1].count("\n") < blocks[0].count("\n")  # the last ones get less, down to the header


def test_the_trimmed_prompt_drops_history_and_shortens_sources() -> None:
    code = "\n".join(f"v{n} = {n}" for n in range(300))
    long_hits = [Hit(repo="r", path=f"f{i}.py", line=1, end_line=300, snippet=code) for i in range(8)]
    search = completed(long_hits, history=[HistoryItem(role="user", text="before"),
                                          HistoryItem(role="assistant", text="after")])
    full = build_prompt(search, _ai())
    trimmed = build_prompt(search, _ai(), trimmed=True)
    assert trimmed.trimmed and not full.trimmed
    assert len(trimmed.messages) == 1
    assert trimmed.tokens < full.tokens / 2
    assert "v19 = 19" in trimmed.messages[0].content
    assert "v20 = 20" not in trimmed.messages[0].content


def test_history_budget_comes_from_the_settings() -> None:
    history = [_item("user" if i % 2 == 0 else "assistant", 100, f"m{i}") for i in range(6)]
    small = build_prompt(completed(history=history), _ai(AI_HISTORY_TOKENS=200))
    large = build_prompt(completed(history=history), _ai(AI_HISTORY_TOKENS=5000))
    assert len(small.messages) < len(large.messages) == 7
