"""WhatsApp's message formatting rendered as HTML, for the chat playground.

WhatsApp marks ``*bold*``, ``_italic_``, ``~strikethrough~``, ```` `monospace` ```` and ```` ```code
blocks``` ````. A marker only counts where WhatsApp counts it: an opening marker at the start of the
text or after a space or punctuation and followed by a non-space, a closing one after a non-space
and followed by the end, a space or punctuation — so ``snake_case_names`` and ``2*3*4`` stay as they
are. Everything is HTML-escaped first: the output is safe to insert as markup.
"""

from __future__ import annotations

import html
import re

_FENCE = re.compile(r"```(.*?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
# Opening marker: start, whitespace or punctuation before; a non-space after. Closing: the mirror.
# The other markers count as boundaries (nesting: _*both*_), as do the tags already produced.
_BOUNDARY_BEFORE = r"(?:(?<=^)|(?<=[\s(\[{\"'.,;:!?*_~>-]))"
_BOUNDARY_AFTER = r"(?=$|[\s)\]}\"'.,;:!?*_~<-])"
_STYLES = (
    ("*", "strong"),
    ("_", "em"),
    ("~", "del"),
)
_STYLE_PATTERNS = [
    (
        re.compile(_BOUNDARY_BEFORE + re.escape(mark) + r"(?=\S)(.+?)(?<=\S)" + re.escape(mark) + _BOUNDARY_AFTER,
                   re.MULTILINE),
        tag,
    )
    for mark, tag in _STYLES
]
_PLACEHOLDER = "\x00{}\x00"
_PLACEHOLDER_RE = re.compile("\x00(\\d+)\x00")


def _styled(text: str) -> str:
    """Bold, italic and strikethrough over already-escaped text (no code inside)."""
    for pattern, tag in _STYLE_PATTERNS:
        text = pattern.sub(lambda m, t=tag: f"<{t}>{m.group(1)}</{t}>", text)  # type: ignore[misc]
    return text


def _inline(text: str, stash: list[str]) -> str:
    """One run of text outside code blocks: inline code is set aside before the styles apply."""

    def keep(match: re.Match[str]) -> str:
        stash.append(f"<code>{html.escape(match.group(1), quote=False)}</code>")
        return _PLACEHOLDER.format(len(stash) - 1)

    escaped_parts: list[str] = []
    last = 0
    for match in _INLINE_CODE.finditer(text):
        escaped_parts.append(html.escape(text[last : match.start()], quote=False))
        escaped_parts.append(keep(match))
        last = match.end()
    escaped_parts.append(html.escape(text[last:], quote=False))
    return _styled("".join(escaped_parts))


def render(text: str) -> str:
    """``text`` as WhatsApp shows it, in HTML (block code in ``<pre><code>``, line breaks as ``<br>``)."""
    text = text.replace("\x00", "")
    stash: list[str] = []
    out: list[str] = []
    last = 0
    for match in _FENCE.finditer(text):
        out.append(_inline(text[last : match.start()], stash))
        code = match.group(1).strip("\n")
        stash.append(f"<pre><code>{html.escape(code, quote=False)}</code></pre>")
        out.append(_PLACEHOLDER.format(len(stash) - 1))
        last = match.end()
    out.append(_inline(text[last:], stash))
    rendered = "".join(out).replace("\n", "<br>\n")
    # A block element needs no line break of its own right after it.
    rendered = _PLACEHOLDER_RE.sub(lambda m: stash[int(m.group(1))], rendered)
    return rendered.replace("</pre><br>\n", "</pre>\n")


def plain(text: str) -> str:
    """``text`` without WhatsApp's markers: for screen-reader announcements and previews."""
    text = _FENCE.sub(lambda m: m.group(1), text)
    text = _INLINE_CODE.sub(lambda m: m.group(1), text)
    for pattern, _tag in _STYLE_PATTERNS:
        text = pattern.sub(lambda m: m.group(1), text)
    return text
