"""Repositories in distributed mode: added through the gateway's admin API, indexed by the code_search
workers on their own disks (every process here has its own INDEX_DIR: nothing is shared but the
database and the broker), searched through the gateway and answered on WhatsApp."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from libs.common import db
from libs.common.api_keys import create_key
from libs.common.events import Service
from libs.common.models.code_index import Repository
from libs.common.schema import create_schema
from repotalk.client import new_message_sid
from repotalk.stack import HTTP, Stack
from services.code_search.reconcile import local_generations
from tests.conftest import REDIS_URL, apply_env
from tests.e2e.support import SAMPLE_REPO, free_port, post_webhook, wait_until
from tests.fakes.twilio_server import FakeTwilio

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

SENDER = "whatsapp:+15550003333"
SECRET = "git-webhook-secret-for-tests"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def _git(*args: str, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
           "HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _indexed_generation(name: str) -> int:
    with db.session_scope() as session:
        repo = session.get(Repository, name)
        return repo.indexed_generation if repo is not None else 0


def test_a_repository_added_at_the_gateway_is_indexed_by_every_code_search_replica(
    base_env: dict[str, str], pg_url: str, redis_prefix: str, twilio: FakeTwilio, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **base_env, "DATABASE_URL": pg_url, "BROKER_URL": REDIS_URL, "BROKER_KEY_PREFIX": redis_prefix,
        "OUTBOX_RELAY_INTERVAL": "0.5", "WORKER_POOL": "threads", "WORKER_CONCURRENCY": "2",
        "TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": twilio.auth_token,
        "TWILIO_API_BASE_URL": twilio.base_url, "GIT_WEBHOOK_SECRET": SECRET, "REPO_RECONCILE_INTERVAL": "1",
    }
    apply_env(monkeypatch, **env)
    create_schema()
    key = create_key("distributed-repos")
    headers = {"Authorization": f"Bearer {key}"}
    # A git remote (a bare repository on this machine) with the sample code.
    work = tmp_path / "work"
    shutil.copytree(SAMPLE_REPO, work)
    _git("init", "-q", "-b", "main", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "first", cwd=work)
    remote = tmp_path / "relay.git"
    _git("clone", "-q", "--bare", str(work), str(remote), cwd=tmp_path)

    disks = {name: tmp_path / f"index-{name}" for name in (HTTP, *(s.value for s in Service), "code_search-2")}
    process_env = {name: {"INDEX_DIR": str(disk)} for name, disk in disks.items()}
    with Stack(env=env, run_dir=tmp_path / "run", port=free_port(), process_env=process_env) as stack:
        second_port = free_port()
        stack.start_replica(Service.CODE_SEARCH, "code_search-2", {
            "INDEX_DIR": str(disks["code_search-2"]), "WORKER_HEALTH_PORT": str(free_port()),
            "CODE_SEARCH_PORT": str(second_port),
        })
        http = httpx.Client(base_url=stack.base_url, headers=headers, timeout=60)

        added = http.post("/api/v1/repos", json={"source": str(remote), "branch": "main"})
        assert added.status_code == 202, added.text
        assert added.json() | {"source": ""} == {
            "status": "accepted", "repo": "relay", "generation": 1, "source": "", "branch": "main",
        }
        # The event reaches one replica; the other catches up on its periodic reconcile. Each on its own disk.
        wait_until(lambda: all(local_generations(disks[n]) == {"relay": 1} for n in ("code_search", "code_search-2")),
                   120, "both code_search replicas to index relay")
        assert _indexed_generation("relay") == 1
        assert not (disks[HTTP] / "checkouts").exists() and local_generations(disks[HTTP]) == {}

        # /api/v1/search at the gateway is answered from code_search's index (the gateway's disk has none).
        found = http.post("/api/v1/search", json={"query": "where is the webhook signature verified?", "limit": 3})
        assert found.status_code == 200, found.text
        assert found.json()["hits"][0]["repo"] == "relay"
        assert found.json()["hits"][0]["path"] == "webhooks/security.py"
        # Errors come back as code_search gives them: a 400 with its reason, a 401 without a key.
        assert "empty" in http.post("/api/v1/search", json={"query": " "}).json()["detail"]
        anonymous = httpx.post(f"{stack.base_url}/api/v1/search", json={"query": "x"}, timeout=10)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        # The second replica answers from its own index too.
        direct = httpx.post(f"http://127.0.0.1:{second_port}/api/v1/search", headers=headers, timeout=30,
                            json={"query": "def process_webhook", "mode": "pattern"})
        assert direct.status_code == 200 and direct.json()["hits"][0]["repo"] == "relay"

        # A WhatsApp question is answered by the code_search worker from the repository added above.
        assert post_webhook(stack.base_url, "where is the webhook signature verified?", SENDER, new_message_sid(),
                            twilio.auth_token).status_code == 200
        answers = wait_until(
            lambda: [m.body or "" for m in twilio.messages if m.to == SENDER and "relay/" in (m.body or "")],
            90, "the cited answer at fake Twilio",
        )
        assert "relay/webhooks/security.py:" in answers[0]

        # A push to the remote, announced by the git webhook at the gateway: every replica re-indexes.
        (work / "queue.py").write_text("def drain_queue(items):\n    return list(items)\n")
        _git("add", ".", cwd=work)
        _git("commit", "-q", "-m", "queue", cwd=work)
        _git("push", "-q", str(remote), "main", cwd=work)
        body = json.dumps({"ref": "refs/heads/main", "repository": {"name": "relay", "clone_url": str(remote)}})
        signature = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
        pushed = httpx.post(f"{stack.base_url}/webhooks/git", content=body, timeout=30,
                            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature})
        assert pushed.status_code == 202 and pushed.json()["repos"] == ["relay"], pushed.text
        wait_until(lambda: all(local_generations(disks[n]) == {"relay": 2} for n in ("code_search", "code_search-2")),
                   120, "both replicas to re-index relay after the push")
        queue = http.post("/api/v1/search", json={"query": "drain_queue"})
        assert queue.status_code == 200 and queue.json()["hits"][0]["path"] == "queue.py"
