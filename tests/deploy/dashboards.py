"""The provisioned Grafana dashboards as data: every PromQL expression and the metric names it reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "observability" / "grafana" / "dashboards"

# PromQL words that look like metric names but are not.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan", "le"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w(])(?!\s*\()")
_NUMBER_UNIT = re.compile(r"\b\d+(?:\.\d+)?[smhdwy]?\b")


def dashboards() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text())) for path in sorted(DASHBOARDS.glob("*.json"))]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and templating queries (``label_values(metric, label)``)."""
    found = []
    for node in _walk(dashboard):
        expr = node.get("expr")
        if isinstance(expr, str) and expr.strip():
            found.append(expr)
        query = node.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query.startswith(("label_values(", "query_result(")):
            found.append(query[query.index("(") + 1: query.rindex(")")].split(",")[0])
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and variables left out)."""
    text = _STRINGS.sub("", expr)
    text = _GROUPING.sub("", text)
    while _MATCHERS.search(text):
        text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = _NUMBER_UNIT.sub("", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in KEYWORDS}


def dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for expr in expressions(dashboard):
        names |= metric_names(expr)
    return names
