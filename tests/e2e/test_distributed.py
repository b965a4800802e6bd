"""The distributed stack end to end: the gateway and each worker as separate processes over Redis and
Postgres. A signed webhook in, one cited reply out at the fake Twilio server — also when a worker is
killed with SIGKILL mid-task and when Redis is down as the webhook arrives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from libs.common import db
from libs.common.events import Service
from libs.common.models import OutboundMessage
from libs.common.schema import create_schema
from repotalk.client import new_message_sid
from repotalk.stack import Stack
from services.code_search.engine import index_repository
from tests.conftest import REDIS_URL, apply_env
from tests.e2e.servers import PrivateRedis
from tests.e2e.support import SAMPLE_REPO, free_port, post_webhook, wait_until
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.twilio_server import FakeTwilio

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

QUESTION = "where is the webhook signature verified?"
SENDER = "whatsapp:+15550002222"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def _stack_env(base_env: dict[str, str], pg_url: str, broker_url: str, prefix: str, fake: FakeTwilio,
               tmp_path: Path) -> dict[str, str]:
    return {
        **base_env,
        "DATABASE_URL": pg_url,
        "BROKER_URL": broker_url,
        "BROKER_KEY_PREFIX": prefix,
        # Short, so a message held by a killed worker comes back within the test.
        "BROKER_VISIBILITY_TIMEOUT": "8",
        "BROKER_RESTORE_INTERVAL": "1",
        "BROKER_PUBLISH_TIMEOUT": "0.5",
        "OUTBOX_RELAY_INTERVAL": "0.5",
        "INDEX_DIR": str(tmp_path / "index"),
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_API_BASE_URL": fake.base_url,
        "TWILIO_SEND_BACKOFF_BASE": "0.05",
        "WORKER_POOL": "threads",
        "WORKER_CONCURRENCY": "2",
    }


def _prepare(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Migrate the database and index the sample repository, as `make dev-local` does before start."""
    apply_env(monkeypatch, **env)
    create_schema()
    index_repository(SAMPLE_REPO, name="sample_repo")


def _answers(fake: FakeTwilio, address: str) -> list[str]:
    return [m.body for m in fake.messages if m.to == address and "security.py" in m.body]


def _outbound_rows() -> int:
    with db.session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(OutboundMessage)) or 0)


def _drain(stack: Stack, fake: FakeTwilio, auth_token: str, sender: str) -> None:
    """A follow-up message's reply arriving shows the pipeline moved past anything still in flight."""
    before = len([m for m in fake.messages if m.to == sender])
    post_webhook(stack.base_url, "/help", sender, new_message_sid(), auth_token)
    wait_until(lambda: len([m for m in fake.messages if m.to == sender]) > before, 60, "the follow-up reply")


@pytest.fixture
def stack_env(base_env: dict[str, str], pg_url: str, redis_prefix: str, twilio: FakeTwilio,
              tmp_path: Path) -> dict[str, str]:
    return _stack_env(base_env, pg_url, REDIS_URL, redis_prefix, twilio, tmp_path)


def test_separate_processes_answer_once_with_a_citation(
    stack_env: dict[str, str], twilio: FakeTwilio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _prepare(monkeypatch, stack_env)
    with Stack(env=stack_env, run_dir=tmp_path / "run", port=free_port()) as stack:
        sid = new_message_sid()
        for _ in range(2):  # Twilio retrying the same webhook
            assert post_webhook(stack.base_url, QUESTION, SENDER, sid, twilio.auth_token).status_code == 200
        answer = wait_until(lambda: _answers(twilio, SENDER), 60, "the answer at fake Twilio")
        assert "webhooks/security.py:" in answer[0]
        _drain(stack, twilio, twilio.auth_token, SENDER)
        assert len(_answers(twilio, SENDER)) == 1


def test_worker_killed_mid_task_the_turn_completes_exactly_once(
    stack_env: dict[str, str], twilio: FakeTwilio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAI() as llm:
        # The first call hangs long enough for the worker to be killed during it; the redelivered
        # task gets the second, which cites the retrieved file.
        llm.reply("Checked in `sample_repo/webhooks/security.py:22` by *verify_twilio_signature*.", delay=30)
        llm.reply("Checked in `sample_repo/webhooks/security.py:22` by *verify_twilio_signature*.")
        env = {**stack_env, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": llm.base_url,
               "OPENAI_MAX_RETRIES": "0", "AI_TIMEOUT": "60"}
        _prepare(monkeypatch, env)
        with Stack(env=env, run_dir=tmp_path / "run", port=free_port()) as stack:
            assert post_webhook(stack.base_url, QUESTION, SENDER, new_message_sid(),
                                twilio.auth_token).status_code == 200
            wait_until(lambda: len(llm.requests) >= 1, 60, "the ai_engine to call the model")
            stack.kill(Service.AI_ENGINE.value)  # SIGKILL, in the middle of the model call
            stack.start_worker(Service.AI_ENGINE)
            stack.wait_ready(60, services=[Service.AI_ENGINE])
            answer = wait_until(lambda: _answers(twilio, SENDER), 90, "the answer after the kill")
            assert "verify_twilio_signature" in answer[0]
            assert len(llm.requests) == 2
            _drain(stack, twilio, twilio.auth_token, SENDER)
            assert len(_answers(twilio, SENDER)) == 1
            assert _outbound_rows() == 2  # the answer and the follow-up, one chunk each


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_down_when_the_webhook_arrives_is_answered_once_redis_is_back(
    base_env: dict[str, str], pg_url: str, twilio: FakeTwilio, tmp_path: Path, private_redis: PrivateRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _stack_env(base_env, pg_url, private_redis.url, "", twilio, tmp_path)
    _prepare(monkeypatch, env)
    with Stack(env=env, run_dir=tmp_path / "run", port=free_port()) as stack:
        private_redis.stop()
        assert not private_redis.pings()
        response = post_webhook(stack.base_url, QUESTION, SENDER, new_message_sid(), twilio.auth_token)
        assert response.status_code == 200  # accepted and durable, though nothing can be published
        private_redis.start()
        answer = wait_until(lambda: _answers(twilio, SENDER), 90, "the answer once Redis is back")
        assert "webhooks/security.py:" in answer[0]
        _drain(stack, twilio, twilio.auth_token, SENDER)
        assert len(_answers(twilio, SENDER)) == 1
