"""Fixtures of the ai_engine tests: no real waiting in the chain, a clock the test moves, fresh cooldowns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.ai_engine import chain


class FakeClock:
    """chain.clock and chain.sleep: sleeping moves the clock instead of waiting, and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    monkeypatch.setattr(chain, "clock", fake)
    monkeypatch.setattr(chain, "sleep", fake.sleep)
    chain.COOLDOWNS.reset()
    yield fake
    chain.COOLDOWNS.reset()
