"""WhatsApp formatting rendered as HTML for the playground."""

from __future__ import annotations

import pytest

from services.gateway.console.formatting import plain, render


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("*bold*", "<strong>bold</strong>"),
        ("_italic_", "<em>italic</em>"),
        ("~gone~", "<del>gone</del>"),
        ("`x = 1`", "<code>x = 1</code>"),
        ("a *b* _c_ ~d~ `e`", "a <strong>b</strong> <em>c</em> <del>d</del> <code>e</code>"),
        ("(*see* this)", "(<strong>see</strong> this)"),
        ("*bold*, then", "<strong>bold</strong>, then"),
        ("_*both*_", "<em><strong>both</strong></em>"),
        ("*_both_*", "<strong><em>both</em></strong>"),
    ],
)
def test_markers_become_tags(text: str, html: str) -> None:
    assert render(text) == html


@pytest.mark.parametrize(
    "text",
    [
        "snake_case_name",  # no boundary around the underscores
        "2*3*4",
        "* not bold*",  # an opening marker must be followed by a non-space
        "*not bold *",
        "a*b* c",
        "mail_me@x.org_",
    ],
)
def test_markers_inside_words_or_spaced_stay_as_they_are(text: str) -> None:
    assert render(text) == text


def test_code_block_keeps_its_text_verbatim_and_unstyled() -> None:
    text = "look:\n```\ndef f(*args, **kw):\n    return _x_ < 2\n```\n*done*"
    html = render(text)
    assert "<pre><code>def f(*args, **kw):\n    return _x_ &lt; 2</code></pre>" in html
    assert html.startswith("look:<br>\n<pre>")
    assert html.endswith("<strong>done</strong>")
    assert "<em>" not in html


def test_inline_code_is_not_styled_inside() -> None:
    assert render("`*a*` and *b*") == "<code>*a*</code> and <strong>b</strong>"


def test_everything_is_escaped() -> None:
    html = render('<img src=x onerror="alert(1)"> *<b>hi</b>* `<i>` ```<script>```')
    assert "<img" not in html and "<b>" not in html and "<i>" not in html and "<script>" not in html
    assert "&lt;img src=x" in html
    assert "<strong>&lt;b&gt;hi&lt;/b&gt;</strong>" in html
    assert "<code>&lt;i&gt;</code>" in html
    assert "<pre><code>&lt;script&gt;</code></pre>" in html


def test_line_breaks_and_nul_characters() -> None:
    assert render("one\ntwo") == "one<br>\ntwo"
    # The renderer's own placeholders use NUL: a NUL in a message cannot forge one.
    assert render("\x000\x00 `a`") == "0 <code>a</code>"


def test_plain_drops_the_markers() -> None:
    assert plain("*Sources*: `a.py:3` and _maybe_ ~not~\n```x = 1```") == "Sources: a.py:3 and maybe not\nx = 1"
