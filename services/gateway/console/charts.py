"""Small inline SVG charts drawn on the server: no script, no external library, readable without colour."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

BAR = "#008069"
TEXT = "#54656f"


def _fmt(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.4f}" if value < 1 else f"${value:,.2f}"
    text = f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.1f}"
    return f"{text}{(' ' + unit) if unit else ''}"


def columns(points: Sequence[tuple[str, float]], *, title: str, unit: str = "", width: int = 360,
            height: int = 150, every: int = 1) -> Markup:
    """Vertical bars (a time series); ``every``-th label is written under its bar."""
    top, bottom, left = 14, 22, 4
    peak = max((v for _, v in points), default=0) or 1
    plot_h = height - top - bottom
    slot = (width - left) / max(len(points), 1)
    bar_w = max(slot * 0.7, 1)
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width}" y2="{top + plot_h}" stroke="#d1d7db"/>']
    for i, (label, value) in enumerate(points):
        h = plot_h * value / peak
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{BAR}">'
                     f'<title>{escape(label)}: {escape(_fmt(value, unit))}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 6}" font-size="10" fill="{TEXT}" '
                         f'text-anchor="middle">{escape(label)}</text>')
    parts.append(f'<text x="{width - 2}" y="10" font-size="10" fill="{TEXT}" text-anchor="end">'
                 f'max {escape(_fmt(peak if points else 0, unit))}</text></svg>')
    return Markup("".join(parts))


def rows(items: Sequence[tuple[str, float]], *, title: str, unit: str = "", width: int = 360) -> Markup:
    """Horizontal bars (categories), each labelled with its name and value."""
    row_h, label_w, value_w = 22, 120, 80
    height = max(len(items), 1) * row_h + 4
    peak = max((v for _, v in items), default=0) or 1
    plot_w = width - label_w - value_w
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    if not items:
        parts.append(f'<text x="4" y="16" font-size="12" fill="{TEXT}">no data yet</text>')
    for i, (label, value) in enumerate(items):
        y = 2 + i * row_h
        w = plot_w * value / peak
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" font-size="12" fill="#111b21" text-anchor="end">'
                     f'{escape(label[:24])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row_h - 8}" fill="{BAR}"/>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" font-size="12" fill="{TEXT}">'
                     f'{escape(_fmt(value, unit))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
