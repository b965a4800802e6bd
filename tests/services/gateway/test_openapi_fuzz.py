"""schemathesis against the OpenAPI document of the whole embedded app (gateway, search, analytics, sandbox,
console): generated requests, with a valid API key, to every operation. No 5xx; responses match the
document. Run with ``--hypothesis-show-statistics`` to see how many cases ran per operation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from libs.common.api_keys import create_key
from libs.common.schema import create_schema
from repotalk.services import extra_routers
from services.code_search.engine import index_repository
from services.gateway.app import create_app
from tests.conftest import apply_env
from tests.e2e.support import SAMPLE_REPO

_STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The embedded app on its own SQLite file, with the sample repository indexed and an API key."""
    data = tmp_path_factory.mktemp("openapi-fuzz")
    monkeypatch = pytest.MonkeyPatch()
    apply_env(monkeypatch, REPOTALK_ENV="test", REPOTALK_DATA_DIR=str(data), BROKER_URL="memory://localhost/",
              DATABASE_URL=f"sqlite:///{Path(data) / 'fuzz.db'}", SECRET_KEY="test-secret-key-0123456789abcdef0123",
              TWILIO_AUTH_TOKEN="fuzz-auth-token", RATE_LIMIT_PER_MINUTE="0")
    create_schema()
    index_repository(SAMPLE_REPO, name="sample_repo")
    _STATE["key"] = create_key("schemathesis")
    app = create_app(extra_routers=extra_routers(), start_relay=False)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    monkeypatch.undo()


EXAMPLES_PER_OPERATION = 25
# Adding a repository indexes whatever server path it names ("/" included): generated paths would walk the
# test machine's disk. Its validation is covered in tests/services/code_search/test_repos.py.
NOT_FUZZED = {"POST /api/v1/repos"}


def _fuzz(operation: Any, label: str, counts: dict[str, int]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def run(case: schemathesis.Case) -> None:
        counts[label] += 1
        response = case.call(headers={"X-API-Key": _STATE["key"]})
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code >= 400:
            # Every refusal says why, in the `detail` the document promises.
            assert "detail" in response.json(), (label, response.status_code, response.text)

    run()


def test_no_operation_answers_a_server_error(api_schema: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # schemathesis' own pytest plugin (schema.parametrize) does not run under pytest 9: one hypothesis run per
    # operation instead, with schemathesis' strategies and checks.
    counts: dict[str, int] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if label in NOT_FUZZED:
            continue
        counts[label] = 0

        _fuzz(operation, label, counts)
    assert len(counts) >= 8, counts  # every other operation was exercised
    with capsys.disabled():
        print(f"\nschemathesis: {sum(counts.values())} cases over {len(counts)} operations")
        for label, number in sorted(counts.items()):
            print(f"  {number:4d}  {label}")
