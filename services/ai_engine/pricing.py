"""What a model call costs: a price table in USD per million tokens, extendable through AI_PRICES.

A model matches its longest prefix in the table, so dated snapshots (gpt-4o-mini-2024-07-18,
claude-haiku-4-5-20251001) share their family's price. Models of the `local` provider cost nothing
unless AI_PRICES names them: a local server's model names say nothing about a vendor's prices.
"""

from __future__ import annotations

import re
from functools import lru_cache

# USD per million (input, output) tokens, list prices of the vendors' standard tier.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    # Anthropic
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4-5": (5.00, 25.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
}

_ENTRY = re.compile(r"^\s*([\w.:/@+-]+)\s*=\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")


def parse_prices(text: str) -> dict[str, tuple[float, float]]:
    """``model=input/output,…`` (USD per million tokens) -> table. Raises ValueError on a malformed entry."""
    table: dict[str, tuple[float, float]] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        match = _ENTRY.match(entry)
        if match is None:
            raise ValueError(f"AI_PRICES: expected model=input/output, got {entry.strip()!r}")
        table[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return table


@lru_cache(maxsize=16)
def _tables(overrides: str) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    custom = parse_prices(overrides)
    return {**DEFAULT_PRICES, **custom}, custom


def _longest_prefix(model: str, table: dict[str, tuple[float, float]]) -> tuple[float, float]:
    matches = [prefix for prefix in table if model.startswith(prefix)]
    if not matches:
        return (0.0, 0.0)
    return table[max(matches, key=len)]


def price_for(model: str, overrides: str = "", *, vendor_prices: bool = True) -> tuple[float, float]:
    """(input, output) USD per million tokens; (0, 0) for a model nobody priced."""
    full, custom = _tables(overrides)
    return _longest_prefix(model, full if vendor_prices else custom)


def cost_usd(model: str, input_tokens: int, output_tokens: int, overrides: str = "", *,
             vendor_prices: bool = True) -> float:
    input_price, output_price = price_for(model, overrides, vendor_prices=vendor_prices)
    return round((input_tokens * input_price + output_tokens * output_price) / 1_000_000, 8)
