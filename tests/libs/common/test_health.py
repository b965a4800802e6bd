"""Readiness: database and broker checks, and the probe server workers expose."""

from __future__ import annotations

import httpx
import pytest

from libs.common.health import broker_reachable, readiness, serve_probes
from tests.conftest import REDIS_URL, apply_env
from tests.e2e.support import free_port


def test_broker_checks() -> None:
    assert broker_reachable("memory://localhost/")
    assert broker_reachable(REDIS_URL)
    assert not broker_reachable("redis://127.0.0.1:1/0", timeout=0.5)


def test_probe_server_reports_ready_then_names_what_failed(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert readiness() == {"database": True, "broker": True}
    port = free_port()
    server = serve_probes("127.0.0.1", port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        assert httpx.get(f"{base}/ready").status_code == 200
        apply_env(monkeypatch, BROKER_URL="redis://127.0.0.1:1/0", BROKER_PUBLISH_TIMEOUT="0.5")
        response = httpx.get(f"{base}/ready", timeout=10)
        assert response.status_code == 503
        assert response.json()["failed"] == ["broker"]
        assert httpx.get(f"{base}/nope").status_code == 404
    finally:
        server.shutdown()
