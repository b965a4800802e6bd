"""split_message: limits, word boundaries, whole or balanced code fences, numbering."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.splitting import is_fence_opener, split_message, truncate_words

LABEL = re.compile(r"^\((\d+)/(\d+)\)\n")


def _strip_label(chunk: str) -> str:
    return LABEL.sub("", chunk, count=1)


def _is_fence(line: str) -> bool:
    return line.strip().startswith("```")


def _words(text: str) -> list[str]:
    """Words outside fence lines (the splitter may add fence lines, never other words)."""
    return [w for line in text.split("\n") if not _is_fence(line) for w in line.split()]


def _fences_balanced(chunk: str) -> bool:
    return sum(1 for line in chunk.split("\n") if _is_fence(line)) % 2 == 0


# -- examples -------------------------------------------------------------------------------------


def test_short_text_is_one_untouched_message() -> None:
    assert split_message("hello\n\nworld") == ["hello\n\nworld"]
    assert split_message("x" * 1600) == ["x" * 1600]


def test_blank_text_has_no_messages() -> None:
    assert split_message("") == [] and split_message(" \n\n\t ") == []


def test_paragraphs_are_preferred_split_points() -> None:
    first, second = "a " * 30, "b " * 30
    chunks = split_message(f"{first.strip()}\n\n{second.strip()}", limit=80)
    assert [_strip_label(c) for c in chunks] == [first.strip(), second.strip()]
    assert [LABEL.match(c).groups() for c in chunks] == [("1", "2"), ("2", "2")]  # type: ignore[union-attr]


def test_lines_then_words() -> None:
    text = "\n".join(["line one is here", "line two is here", "line three is here"])
    assert [_strip_label(c) for c in split_message(text, limit=40)] == [
        "line one is here\nline two is here", "line three is here",
    ]
    chunks = split_message("alpha beta gamma delta epsilon zeta eta theta", limit=24)
    assert all(len(c) <= 24 for c in chunks)
    assert _words(" ".join(_strip_label(c) for c in chunks)) == [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
    ]


def test_a_word_longer_than_the_limit_is_the_only_thing_cut() -> None:
    word = "x" * 100
    chunks = split_message(f"short {word} tail", limit=40)
    assert all(len(c) <= 40 for c in chunks)
    assert "".join(_strip_label(c) for c in chunks).replace("short", "").replace("tail", "") == word


def test_code_block_that_fits_stays_whole() -> None:
    code = "```python\n" + "\n".join(f"value_{i} = {i}" for i in range(10)) + "\n```"
    text = "intro " * 30 + "\n\n" + code + "\n\n" + "outro " * 30
    chunks = [_strip_label(c) for c in split_message(text, limit=250)]
    assert code in chunks or any(code in c for c in chunks)


def test_long_code_block_is_split_by_lines_with_fences_reopened() -> None:
    lines = [f"    call_{i}(argument)" for i in range(60)]
    text = "Here:\n```python\n" + "\n".join(lines) + "\n```\nDone."
    chunks = split_message(text, limit=200)
    assert len(chunks) > 2 and all(len(c) <= 200 for c in chunks)
    for chunk in chunks:
        assert _fences_balanced(chunk)
        body = _strip_label(chunk)
        if "call_" in body:
            assert "```python\n" in body and "\n```" in body[body.rindex("call_"):]
    kept = [line for c in chunks for line in _strip_label(c).split("\n") if "call_" in line]
    assert kept == lines  # indentation and order preserved


def test_unclosed_fence_is_closed_when_split() -> None:
    text = "```\n" + "\n".join(f"row {i}" for i in range(100))
    chunks = split_message(text, limit=120)
    assert all(_fences_balanced(c) and len(c) <= 120 for c in chunks)


def test_inline_triple_backticks_are_not_fences() -> None:
    assert not is_fence_opener("```inline```")
    assert is_fence_opener("```python") and is_fence_opener("  ```")


def test_numbering_counts_toward_the_limit_even_past_nine_chunks() -> None:
    text = "\n\n".join(f"paragraph number {i} " + "word " * 12 for i in range(40))
    chunks = split_message(text, limit=100)
    assert len(chunks) >= 10
    assert all(len(c) <= 100 for c in chunks)
    assert [LABEL.match(c).group(1) for c in chunks] == [str(i) for i in range(1, len(chunks) + 1)]  # type: ignore[union-attr]
    assert {LABEL.match(c).group(2) for c in chunks} == {str(len(chunks))}  # type: ignore[union-attr]


def test_too_small_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        split_message("text", limit=5)


def test_truncate_words() -> None:
    assert truncate_words("short", 10) == "short"
    assert truncate_words("one two three four", 12) == "one two…"
    assert len(truncate_words("x" * 50, 10)) == 10


# -- properties -----------------------------------------------------------------------------------

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.,:;()!?'\"-", min_size=1, max_size=12)
_line = st.lists(_word, min_size=1, max_size=12).map(" ".join)
_paragraph = st.lists(_line, min_size=1, max_size=6).map("\n".join)
_code_line = st.builds(lambda indent, line: " " * indent + line, st.integers(0, 8), _line)
_code = st.builds(
    lambda lang, lines: f"```{lang}\n" + "\n".join(lines) + "\n```",
    st.sampled_from(["", "python", "js", "sql"]),
    st.lists(_code_line | st.just(""), min_size=0, max_size=25),
)
_document = st.lists(_paragraph | _code, min_size=1, max_size=12).map("\n\n".join)


@settings(max_examples=300, deadline=None)
@given(text=_document, limit=st.integers(min_value=40, max_value=600))
def test_properties(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    assert chunks, "non-blank text gives at least one message"
    for chunk in chunks:
        assert len(chunk) <= limit
        assert chunk.strip()
        assert _fences_balanced(chunk), chunk
    if len(chunks) > 1:
        assert [LABEL.match(c).groups() for c in chunks] == [  # type: ignore[union-attr]
            (str(i), str(len(chunks))) for i in range(1, len(chunks) + 1)
        ]
    # Never mid-word: the words come out whole and in order (fence lines aside).
    assert _words("\n".join(_strip_label(c) for c in chunks)) == _words(text)


@settings(max_examples=100, deadline=None)
@given(text=_document)
def test_default_limit_property(text: str) -> None:
    long_text = "\n\n".join([text] * 8)
    chunks = split_message(long_text)
    assert all(len(c) <= 1600 and _fences_balanced(c) for c in chunks)
    assert _words("\n".join(_strip_label(c) for c in chunks)) == _words(long_text)
