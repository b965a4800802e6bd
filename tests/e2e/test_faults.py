"""Faults under load, distributed mode: each worker kind killed with SIGKILL in turn, the HTTP gateway
killed, Redis restarted (losing everything queued in it), PostgreSQL crashed and restarted, the model
provider failing and then slow. Every accepted message is answered exactly once.

One stack (on a private Redis and PostgreSQL) serves every fault in turn; bench/faults.py runs the same
phases at a higher rate and prints the figures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from libs.common.events import Service
from tests.e2e.faultload import FaultBench
from tests.e2e.servers import private_postgres_available

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

FAULTS = [
    "none",
    *(f"kill -9 {service.value} worker" for service in Service),
    "kill -9 http gateway",
    "restart redis (queues lost)",
    "crash + restart postgres",
    "llm provider failing (500s)",
    "llm provider slow (> timeout)",
]


@pytest.fixture(scope="module")
def bench() -> Iterator[FaultBench]:
    reason = private_postgres_available()
    if reason:
        pytest.skip(f"a private PostgreSQL cannot be started: {reason}")
    with FaultBench(rate=4.0, lead=1.5, tail=2.0) as running:
        yield running


@pytest.mark.parametrize("fault", FAULTS)
def test_every_accepted_message_is_answered_exactly_once(bench: FaultBench, fault: str) -> None:
    result = bench.run(fault)
    assert result.sent >= 10, result
    # A webhook refused while the fault lasted was retried until accepted, as Twilio would.
    assert result.accepted == result.sent, result
    assert result.lost == 0, result
    assert result.duplicated == 0, result
