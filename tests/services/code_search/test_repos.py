"""Adding and re-indexing repositories (admin API, git clones) and the git push webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from libs.common import db
from libs.common.api_keys import create_key, revoke_key
from libs.common.models.code_index import Repository
from libs.common.security import decrypt
from libs.common.settings import get_settings
from services.code_search import catalog
from services.code_search import repos as repo_admin
from services.code_search.api import router
from services.code_search.engine import index_repository, search
from services.code_search.permalinks import permalink
from services.code_search.reconcile import Reconciler
from tests.conftest import apply_env

SECRET = "webhook-secret-for-tests"


def git(*args: str, cwd: Path) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
        "HOME": str(cwd),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path]:
    """A bare repository (the "remote") and a working clone to push from."""
    bare = tmp_path / "relay.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    (work / "relay.py").write_text("def relay_message(body):\n    return body.upper()\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    return bare, work


def push(work: Path, name: str, text: str) -> str:
    (work / name).write_text(text)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", f"add {name}", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def converge() -> list[str]:
    """What a code_search replica does on repo.index_requested (or its periodic pass): the repositories it indexed."""
    report = Reconciler().run_once()
    assert not report.failed, report
    return report.indexed


def catalog_row(name: str) -> Repository:
    with db.session_scope() as session:
        row = session.get(Repository, name)
        assert row is not None
        session.expunge(row)
        return row


@pytest.fixture
def client(database: str, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    apply_env(monkeypatch, GIT_WEBHOOK_SECRET=SECRET)
    app = FastAPI()
    app.include_router(router)
    return TestClient(app, headers={"Authorization": f"Bearer {create_key('repos-test')}"})


def test_add_a_git_url_then_reindex_after_a_push(client: TestClient, remote: tuple[Path, Path]) -> None:
    bare, work = remote
    response = client.post("/api/v1/repos", json={"source": str(bare), "branch": "main"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {"status": "accepted", "repo": "relay", "generation": 1, "source": str(bare), "branch": "main"}
    assert converge() == ["relay"]
    row = catalog_row("relay")
    assert (row.file_count, row.commit, row.indexed_generation) == (1, git("rev-parse", "HEAD", cwd=work).strip(), 1)
    assert search("relay_message").hits[0].path == "relay.py"
    assert converge() == []  # up to date: nothing to do

    commit = push(work, "queue.py", "def drain_queue(items):\n    return list(items)\n")
    again = client.post("/api/v1/repos/relay/reindex")
    assert again.status_code == 202 and again.json()["generation"] == 2
    assert converge() == ["relay"]
    row = catalog_row("relay")
    assert (row.file_count, row.commit, row.indexed_generation) == (2, commit, 2)
    assert search("drain_queue").hits[0].path == "queue.py"


def test_add_a_local_path_and_errors(client: TestClient, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_text("def alpha():\n    return 1\n")
    assert client.post("/api/v1/repos", json={"source": str(tree), "name": "tree"}).status_code == 202
    assert client.post("/api/v1/repos", json={"source": str(tmp_path / "nope")}).status_code == 400
    assert client.post("/api/v1/repos", json={"source": str(tree), "name": "bad name!"}).status_code == 400
    assert client.post("/api/v1/repos", json={"source": "--upload-pack=touch /tmp/x"}).status_code == 400
    missing = client.post("/api/v1/repos", json={"source": f"file://{tmp_path}/missing.git"})
    assert missing.status_code == 422 and "git ls-remote failed" in missing.json()["detail"]
    other = client.post("/api/v1/repos", json={"source": str(tmp_path), "name": "tree"})
    assert other.status_code == 409 and "already indexed from" in other.json()["detail"]
    assert client.post("/api/v1/repos/unknown/reindex").status_code == 404


def test_server_paths_are_indexed_only_under_repo_roots(
    client: TestClient, tmp_path: Path, remote: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "tree").mkdir(parents=True)
    (allowed / "tree" / "a.py").write_text("def alpha():\n    return 1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("PASSWORD = 'hunter2'\n")
    (allowed / "escape").symlink_to(outside)
    bare, _work = remote
    apply_env(monkeypatch, REPO_ROOTS=f" {allowed} , {tmp_path / 'elsewhere'}")

    assert client.post("/api/v1/repos", json={"source": str(allowed / "tree")}).status_code == 202
    for source in (str(outside), str(allowed / "escape"), str(allowed / "tree" / ".." / ".." / "outside"),
                   "/etc", str(bare), f"file://{bare}"):
        refused = client.post("/api/v1/repos", json={"source": source, "name": "x"})
        assert refused.status_code == 403, (source, refused.text)
        assert "outside the directories the API may index" in refused.json()["detail"]
        assert str(allowed) in refused.json()["detail"]
    with db.session_scope() as session:
        assert session.get(Repository, "x") is None

    # Production without REPO_ROOTS: no server path at all (a git URL still works).
    apply_env(monkeypatch, REPO_ROOTS="")
    monkeypatch.setattr(get_settings().app, "env", "production")
    refused = client.post("/api/v1/repos", json={"source": str(allowed / "tree"), "name": "tree2"})
    assert refused.status_code == 403 and "set REPO_ROOTS" in refused.json()["detail"]


def test_credentials_of_a_git_url_are_kept_only_encrypted(database: str) -> None:
    url = "https://bob:ghp_s3cretT0ken@git.example.com/acme/relay.git"
    assert catalog.request_index("relay", url, "main") == 1
    with db.session_scope() as session:
        row = session.get(Repository, "relay")
        assert row is not None
        assert row.source == "https://git.example.com/acme/relay.git"  # what the console and the API show
        stored = [str(getattr(row, column.key)) for column in Repository.__table__.columns]
        assert not any("s3cret" in value for value in stored)
        assert row.source_enc is not None and decrypt(row.source_enc) == url
    desired = catalog.repository("relay")
    assert desired is not None and desired.source == url  # what a replica clones with
    accepted = repo_admin.request_reindex("relay")
    assert accepted.generation == 2 and accepted.source == "https://git.example.com/acme/relay.git"
    with db.session_scope() as session:
        again = session.get(Repository, "relay")
        assert again is not None and again.source_enc is not None and decrypt(again.source_enc) == url


def test_an_api_key_is_required(client: TestClient, tmp_path: Path) -> None:
    anonymous = TestClient(client.app)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_text("def alpha():\n    return 1\n")
    assert anonymous.post("/api/v1/repos", json={"source": str(tree)}).status_code == 401
    assert anonymous.post("/api/v1/repos/tree/reindex").status_code == 401
    wrong = anonymous.post("/api/v1/repos", json={"source": str(tree)}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    token = create_key("second-admin")
    ok = anonymous.post("/api/v1/repos", json={"source": str(tree)}, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 202
    revoke_key("second-admin")
    revoked = anonymous.post("/api/v1/repos/tree/reindex", headers={"X-API-Key": token})
    assert revoked.status_code == 403
    # The git webhook has its own signature and needs no key.
    ping = anonymous.post(
        "/webhooks/git", content=b"{}", headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign(b"{}")}
    )
    assert ping.status_code == 202 and ping.json()["status"] == "pong"


def github_push(bare: Path, branch: str = "main") -> bytes:
    return json.dumps({"ref": f"refs/heads/{branch}", "repository": {"name": "relay", "clone_url": str(bare)}}).encode()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_signed_github_push_reindexes(client: TestClient, remote: tuple[Path, Path]) -> None:
    bare, work = remote
    assert client.post("/api/v1/repos", json={"source": str(bare)}).status_code == 202
    assert converge() == ["relay"]
    commit = push(work, "queue.py", "def drain_queue(items):\n    return list(items)\n")
    body = github_push(bare)
    response = client.post(
        "/webhooks/git",
        content=body,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(body), "Content-Type": "application/json"},
    )
    assert response.status_code == 202 and response.json() == {"status": "accepted", "repos": ["relay"], "reason": None}
    assert catalog_row("relay").generation == 2
    assert converge() == ["relay"]
    hit = search("drain_queue").hits[0]
    assert hit.path == "queue.py"
    other = github_push(bare, "feature")
    ignored = client.post(
        "/webhooks/git", content=other, headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(other)}
    )
    assert ignored.json()["status"] == "ignored" and "feature" in ignored.json()["reason"]
    assert commit


def test_github_signatures_are_checked(client: TestClient, remote: tuple[Path, Path]) -> None:
    body = github_push(remote[0])
    missing = client.post("/webhooks/git", content=body, headers={"X-GitHub-Event": "push"})
    assert missing.status_code == 401 and "X-Hub-Signature-256" in missing.json()["detail"]
    forged = client.post(
        "/webhooks/git",
        content=body,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(body, "other-secret")},
    )
    assert forged.status_code == 403 and "does not match" in forged.json()["detail"]
    tampered = client.post(
        "/webhooks/git", content=body + b" ", headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(body)}
    )
    assert tampered.status_code == 403
    ping = client.post(
        "/webhooks/git", content=b"{}", headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign(b"{}")}
    )
    assert ping.status_code == 202 and ping.json()["status"] == "pong"
    assert client.post("/webhooks/git", content=body).status_code == 400


def test_gitlab_tokens_are_checked_and_pushes_reindex(client: TestClient, remote: tuple[Path, Path]) -> None:
    bare, work = remote
    assert client.post("/api/v1/repos", json={"source": str(bare)}).status_code == 202
    assert converge() == ["relay"]
    push(work, "queue.py", "def drain_queue(items):\n    return list(items)\n")
    body = json.dumps({"ref": "refs/heads/main", "project": {"name": "relay", "git_http_url": str(bare)}}).encode()
    assert client.post("/webhooks/git", content=body, headers={"X-Gitlab-Event": "Push Hook"}).status_code == 401
    wrong = client.post("/webhooks/git", content=body, headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "x"})
    assert wrong.status_code == 403 and "X-Gitlab-Token" in wrong.json()["detail"]
    ok = client.post("/webhooks/git", content=body, headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET})
    assert ok.status_code == 202 and ok.json()["repos"] == ["relay"]
    assert converge() == ["relay"]
    assert search("drain_queue").hits[0].path == "queue.py"


def test_the_webhook_is_refused_without_a_secret(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, GIT_WEBHOOK_SECRET="")
    response = client.post(
        "/webhooks/git", content=b"{}", headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": ""}
    )
    assert response.status_code == 403 and "GIT_WEBHOOK_SECRET" in response.json()["detail"]


@pytest.mark.parametrize(
    ("remote_url", "expected"),
    [
        ("git@github.com:acme/relay.git", "https://github.com/acme/relay/blob/{c}/web/a b.py#L3-L5"),
        ("https://github.com/acme/relay", "https://github.com/acme/relay/blob/{c}/web/a b.py#L3-L5"),
        ("https://gitlab.com/group/sub/relay.git", "https://gitlab.com/group/sub/relay/-/blob/{c}/web/a b.py#L3-5"),
        (
            "ssh://git@gitlab.example.org/team/relay.git",
            "https://gitlab.example.org/team/relay/-/blob/{c}/web/a b.py#L3-5",
        ),
        ("https://bitbucket.org/acme/relay.git", None),
        ("/srv/git/relay.git", None),
    ],
)
def test_permalinks(remote_url: str, expected: str | None) -> None:
    commit = "a" * 40
    link = permalink(remote_url, commit, "web/a b.py", 3, 5)
    assert link == (expected.format(c=commit).replace("a b", "a%20b") if expected else None)
    assert permalink(remote_url, "", "x.py", 1, 1) is None


def test_hits_carry_permalinks_at_the_indexed_commit(database: str, tmp_path: Path) -> None:
    tree = tmp_path / "relay"
    tree.mkdir()
    git("init", "-q", "-b", "main", cwd=tree)
    (tree / "relay.py").write_text("def relay_message(body):\n    return body.upper()\n")
    git("add", ".", cwd=tree)
    git("commit", "-q", "-m", "first", cwd=tree)
    git("remote", "add", "origin", "https://token@github.com/acme/relay.git", cwd=tree)
    commit = git("rev-parse", "HEAD", cwd=tree).strip()
    index_repository(tree)
    hit = search("relay_message").hits[0]
    assert hit.url == f"https://github.com/acme/relay/blob/{commit}/relay.py#L1-L2"
