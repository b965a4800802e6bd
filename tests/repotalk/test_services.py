"""What the gateway mounts of code_search's routes: answered in-process (embedded) or forwarded to a
code_search worker (CODE_SEARCH_URL), with the same documented contract either way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from libs.common.api_keys import create_key
from libs.common.settings import get_settings
from repotalk.services import extra_routers, router_modules
from services.gateway.app import create_app
from tests.conftest import apply_env
from tests.e2e.support import free_port


def test_embedded_answers_in_process_and_code_search_url_forwards(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert router_modules() == ["services.code_search.api", "services.analytics.api"]
    apply_env(monkeypatch, CODE_SEARCH_URL="http://code-search:8002")
    assert router_modules() == ["services.code_search.remote", "services.analytics.api"]


def test_the_forwarding_routes_document_what_code_search_serves(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = create_app(extra_routers=extra_routers(), start_relay=False).openapi()
    apply_env(monkeypatch, CODE_SEARCH_URL="http://127.0.0.1:9")
    remote = create_app(extra_routers=extra_routers(get_settings()), start_relay=False).openapi()
    for path in ("/api/v1/search", "/api/v1/repos", "/api/v1/repos/{name}/reindex", "/webhooks/git"):
        here, there = local["paths"][path]["post"], remote["paths"][path]["post"]
        assert here.get("requestBody") == there.get("requestBody"), path
        assert set(here["responses"]) <= set(there["responses"]), path
        assert here.get("security") == there.get("security"), path


def test_code_search_unreachable_is_a_503_and_the_key_is_checked_first(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_env(monkeypatch, CODE_SEARCH_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with TestClient(create_app(extra_routers=extra_routers(), start_relay=False)) as client:
        body = {"query": "where is the webhook signature verified?"}
        assert client.post("/api/v1/search", json=body).status_code == 401
        assert client.post("/api/v1/search", json={"query": "x", "limit": 0},
                           headers={"X-API-Key": create_key("remote-test")}).status_code == 422
        token = create_key("remote-test-2")
        down = client.post("/api/v1/search", json=body, headers={"Authorization": f"Bearer {token}"})
        assert down.status_code == 503 and "code_search cannot be reached" in down.json()["detail"]
        assert down.headers["Retry-After"] == "5"
        added = client.post("/api/v1/repos", json={"source": str(tmp_path)}, headers={"X-API-Key": token})
        assert added.status_code == 503
        # Nothing was done here: the gateway's own disk holds no index.
        assert not (get_settings().index_dir / "generations.json").exists()


def test_the_forwarding_gateway_never_loads_the_search_engine(base_env: dict[str, str]) -> None:
    # tantivy, numpy and the tree-sitter grammars cost the HTTP process about 25 MB that it never uses.
    script = (
        "import sys\n"
        "from repotalk.services import extra_routers\n"
        "from services.gateway.app import create_app\n"
        "create_app(extra_routers=extra_routers(), start_relay=False).openapi()\n"
        "print(sorted(m for m in ('tantivy', 'numpy', 'services.code_search.engine') if m in sys.modules))\n"
    )
    env = {**os.environ, **base_env, "CODE_SEARCH_URL": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
