"""Answers composed without a model: the offline answerer, pattern listings, no hits, search errors."""

from __future__ import annotations

import re

import pytest

from libs.common.events import Hit, SearchCompleted
from services.ai_engine.citations import check_citations, expand_source_numbers
from services.ai_engine.formatting import to_whatsapp, trim_code, truncate
from services.ai_engine.offline import offline_answer
from services.ai_engine.replies import no_hits_answer, pattern_answer, search_error_answer
from tests.services.ai_engine.helpers import BEST, WEBHOOK, completed, hits, request

CODE_BLOCK = re.compile(r"```\n(.*?)\n```", re.S)


def test_offline_answer_leads_with_the_best_place_and_shows_its_code() -> None:
    answer = offline_answer(hits(), max_chars=3000)
    first_line = answer.split("\n")[0]
    assert "*verify_signature*" in first_line
    assert "repotalk/services/gateway/signature.py:41" in first_line
    blocks = CODE_BLOCK.findall(answer)
    assert len(blocks) == 1
    # Dedented: the method's own indentation is gone, its body keeps its relative indent.
    assert blocks[0].startswith("def verify_signature(self, url: str")
    assert "    return hmac.compare_digest(expected, signature)" in blocks[0]
    also = answer.split("*Also relevant:*", 1)[1]
    assert "repotalk/services/gateway/webhooks.py:88 — *twilio_webhook* (function)" in also
    assert "repotalk/docs/twilio.md:12" in also
    assert "signature.py:41" not in also


def test_offline_answer_uses_whatsapp_formatting_only() -> None:
    answer = offline_answer(hits(), max_chars=3000)
    assert not re.search(r"^#", answer, re.M)
    assert "**" not in answer
    assert not re.search(r"^\s*\|", answer, re.M)


def test_offline_answer_is_deterministic() -> None:
    assert offline_answer(hits(), 3000) == offline_answer(hits(), 3000)


def test_offline_answer_trims_long_code_for_a_phone() -> None:
    long_hit = Hit(repo="r", path="big.py", line=1, end_line=200, symbol="big", kind="function",
                   snippet="\n".join(f"line_{i} = {i}" for i in range(200)))
    answer = offline_answer([long_hit], max_chars=3000)
    code = CODE_BLOCK.findall(answer)[0].split("\n")
    assert code[0] == "line_0 = 0"
    assert code[-1] == "…"
    assert len(code) <= 13


@pytest.mark.parametrize("max_chars", [220, 400, 700, 3000])
def test_offline_answer_fits_the_limit_and_keeps_the_best_place(max_chars: int) -> None:
    many = hits() + [
        Hit(repo="repotalk", path=f"services/mod_{i}.py", line=i + 1, end_line=i + 9, symbol=f"helper_{i}",
            kind="function", snippet="def f():\n" + "    pass\n" * 30)
        for i in range(12)
    ]
    answer = offline_answer(many, max_chars=max_chars)
    assert len(answer) <= max_chars
    assert "repotalk/services/gateway/signature.py:41" in answer
    assert answer.count("```") % 2 == 0


def test_offline_answer_without_symbol_or_snippet() -> None:
    bare = Hit(repo="notes", path="README.md", line=3, end_line=3)
    answer = offline_answer([bare], max_chars=3000)
    assert answer.startswith("The best match is in notes/README.md:3")
    assert "```" not in answer
    assert "Also relevant" not in answer


def test_pattern_results_list_each_match_with_its_line_in_monospace() -> None:
    matches = [
        Hit(repo="repotalk", path="libs/common/bus.py", line=120, end_line=120, kind="match",
            snippet="    def publish(envelope: Envelope) -> None:"),
        Hit(repo="web", path="src/api.ts", line=7, end_line=7, kind="match", snippet="export function publish() {"),
    ]
    search = SearchCompleted(request=request("def publish", mode="pattern", limit=8), hits=matches)
    answer = pattern_answer(search, 3000)
    assert answer.startswith("*2 matches* for ```def publish```")
    assert "• repotalk/libs/common/bus.py:120\n```def publish(envelope: Envelope) -> None:```" in answer
    assert "• web/src/api.ts:7\n```export function publish() {```" in answer
    assert "may be more" not in answer


def test_pattern_results_say_when_the_list_is_truncated() -> None:
    matches = [Hit(repo="r", path=f"f{i}.py", line=i + 1, end_line=i + 1, kind="match", snippet=f"TODO {i}")
               for i in range(5)]
    search = SearchCompleted(request=request("TODO", mode="pattern", limit=5), hits=matches)
    answer = pattern_answer(search, 3000)
    assert "*5 matches*" in answer
    assert "showing the first 5; there may be more" in answer


def test_pattern_results_that_do_not_fit_are_counted() -> None:
    matches = [Hit(repo="r", path=f"dir/file_{i}.py", line=i + 1, end_line=i + 1, kind="match",
                   snippet="x" * 100) for i in range(40)]
    search = SearchCompleted(request=request("x+", mode="pattern", limit=50), hits=matches)
    answer = pattern_answer(search, 1000)
    assert len(answer) <= 1000
    shown = answer.count("• r/dir/file_")
    assert 0 < shown < 40
    assert f"…and {40 - shown} more not shown" in answer


def test_no_hits_answer_suggests_what_to_try() -> None:
    answer = no_hits_answer(completed([], repos=["api"]), 3000)
    assert answer.startswith("I couldn't find that in *api*.")
    assert "/repos" in answer
    assert "/search" in answer
    assert "identifier" in answer


def test_search_error_quotes_the_reason_with_a_hint() -> None:
    reason = "invalid regex: missing ), unterminated subpattern"
    search = SearchCompleted(request=request("foo(", mode="pattern"), error=reason)
    answer = search_error_answer(search, 3000)
    assert "invalid regex: missing ), unterminated subpattern" in answer
    assert "backslash" in answer


def test_markdown_is_converted_to_whatsapp() -> None:
    markdown = "\n".join([
        "## Where it happens",
        "",
        "The **signature** check uses __HMAC__ and ~~MD5~~ [docs](https://twilio.com/docs).",
        "",
        "| Step | Where |",
        "|------|-------|",
        "| verify | `signature.py` |",
        "",
        "```python",
        "x = **kwargs",
        "```",
        "- first",
        "* second",
        "---",
    ])
    assert to_whatsapp(markdown) == "\n".join([
        "*Where it happens*",
        "",
        "The *signature* check uses *HMAC* and ~MD5~ docs (https://twilio.com/docs).",
        "",
        "*Step · Where*",
        "• verify — `signature.py`",
        "",
        "```",
        "x = **kwargs",
        "```",
        "• first",
        "• second",
    ])


def test_whatsapp_text_passes_through_unchanged() -> None:
    text = "*Bold* and _italic_\n\n```\ncode()\n```\n• item"
    assert to_whatsapp(text) == text


def test_unknown_citations_are_removed_and_known_ones_kept() -> None:
    text = "\n".join([
        "It is checked in `repotalk/services/gateway/signature.py:43` (see repotalk/services/auth.py:10).",
        "• repotalk/services/made_up.py:3",
        "• services/gateway/webhooks.py:90 — the webhook",
        "```",
        "# repotalk/inside/code.py:1 stays",
        "```",
    ])
    checked = check_citations(text, hits())
    assert checked.text == "\n".join([
        "It is checked in `repotalk/services/gateway/signature.py:43`.",
        "• repotalk/services/gateway/webhooks.py:90 — the webhook",
        "```",
        "# repotalk/inside/code.py:1 stays",
        "```",
    ])
    assert checked.kept == ["repotalk/services/gateway/signature.py:43", "repotalk/services/gateway/webhooks.py:90"]
    assert checked.removed == ["repotalk/services/auth.py:10", "repotalk/services/made_up.py:3"]


def test_a_line_outside_the_hit_range_is_not_a_source() -> None:
    checked = check_citations("See repotalk/services/gateway/signature.py:400.", hits())
    assert checked.kept == []
    assert "signature.py" not in checked.text


def test_urls_are_not_citations() -> None:
    text = "Docs at https://example.com/a/b:8080 and http://localhost:8000/x"
    assert check_citations(text, hits()).text == text


def test_trim_and_truncate_helpers() -> None:
    assert trim_code("\n\n    a\n      b\n\n", 10) == "a\n  b"
    assert trim_code("a\n```\nb", 10) == "a\n``\u200b`\nb"
    long = "intro\n```\n" + "\n".join(f"line {i}" for i in range(100)) + "\n```"
    cut = truncate(long, 200)
    assert len(cut) <= 200
    assert cut.endswith("```\n…")
    assert truncate("short", 200) == "short"


def test_source_numbers_become_locations() -> None:
    text = "\n".join([
        "It is checked in verify_signature [1], called by the webhook [2, 3].",
        f"Shown in {BEST} [1].",
        "An index like items[2] or a link [2](https://x.y) stays; [9] goes.",
        "```",
        "values[1] = [2]",
        "```",
        "[7]",
    ])
    assert expand_source_numbers(text, hits()) == "\n".join([
        f"It is checked in verify_signature {BEST}, called by the webhook {WEBHOOK}, repotalk/docs/twilio.md:12.",
        f"Shown in {BEST}.",
        "An index like items[2] or a link [2](https://x.y) stays; goes.",
        "```",
        "values[1] = [2]",
        "```",
    ])
