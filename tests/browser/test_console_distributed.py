"""The playground served by the gateway as its own process, with every worker a separate process
over Redis and Postgres: the reply is written by the gateway worker, another process, and still
appears in the page without a reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from libs.common.schema import create_schema
from repotalk.stack import Stack
from services.code_search.engine import index_repository
from tests.browser.conftest import screenshot
from tests.conftest import REDIS_URL, apply_env
from tests.e2e.support import SAMPLE_REPO, free_port

pytestmark = [pytest.mark.browser, pytest.mark.distributed, pytest.mark.slow]


def test_the_playground_works_with_every_service_in_its_own_process(
    base_env: dict[str, str], pg_url: str, redis_prefix: str, tmp_path: Path, page: Page,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **base_env, "DATABASE_URL": pg_url, "BROKER_URL": REDIS_URL, "BROKER_KEY_PREFIX": redis_prefix,
        "INDEX_DIR": str(tmp_path / "index"), "OUTBOX_RELAY_INTERVAL": "0.5", "WORKER_POOL": "threads",
        "WORKER_CONCURRENCY": "2",
    }
    apply_env(monkeypatch, **env)
    create_schema()
    index_repository(SAMPLE_REPO, name="sample_repo")
    with Stack(env=env, run_dir=tmp_path / "run", port=free_port()) as stack:
        page.goto(f"{stack.base_url}/console/chat?as=+15550004444")
        page.get_by_label("Message").fill("where is the webhook signature verified?")
        page.get_by_role("button", name="Send").click()
        answer = page.locator("#messages .from-bot").first
        expect(answer).to_contain_text("webhooks/security.py:", timeout=60_000)
        expect(page.locator("#messages .from-me").get_by_role("img", name="Read")).to_be_visible()
        screenshot(page, "chat-distributed")
