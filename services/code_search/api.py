"""HTTP side of code_search: ``POST /api/v1/search``, the repository admin API
(``POST /api/v1/repos``, ``POST /api/v1/repos/{name}/reindex``) and the git push webhook
(``POST /webhooks/git``, GitHub and GitLab).

Served where the index is: in-process when embedded, by each code_search worker on ``CODE_SEARCH_PORT``
in distributed mode (the gateway forwards there, see ``remote``). The admin API and the webhook only
validate and record the desired state and answer 202; the replicas converge (``reconcile``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from libs.common.api_keys import AUTH_RESPONSES, AdminKey, ErrorDetail
from libs.common.settings import get_settings
from services.code_search import repos as repo_admin
from services.code_search.api_models import (
    REPO_ERRORS,
    AddRepoBody,
    FileHits,
    IndexAccepted,
    SearchBody,
    SearchResponse,
    WebhookResponse,
)
from services.code_search.engine import CLIENT_ERRORS, search
from services.code_search.query import MAX_QUERY_CHARS

log = logging.getLogger(__name__)

router = APIRouter(tags=["search"])


@router.post(
    "/api/v1/search", response_model=SearchResponse, responses={400: {"model": ErrorDetail}, **AUTH_RESPONSES}
)
def search_code(body: SearchBody, _key: AdminKey) -> SearchResponse:
    """Search the indexed repositories (free text with repo:, path:, lang:, sym:, re:, case: filters).
    400 when the query itself is unusable (empty, longer than the limit, an invalid pattern or
    filter); other conditions (nothing indexed, unknown repository) come back as ``error`` with no hits."""
    if len(body.query) > 4 * MAX_QUERY_CHARS:
        raise HTTPException(400, detail=f"the search is too long (at most {MAX_QUERY_CHARS} characters)")
    result = search(body.query, repos=body.repos, limit=body.limit or 8, mode=body.mode)
    if result.code in CLIENT_ERRORS:
        raise HTTPException(400, detail=result.error)
    files = [FileHits(repo=g.repo, path=g.path, language=g.language, hits=g.hits) for g in result.groups]
    return SearchResponse(
        hits=result.hits, took_ms=result.took_ms, kinds=result.kinds, error=result.error, files=files
    )


# -- repository admin -------------------------------------------------------------------------------


def _accepted(request: repo_admin.Accepted) -> IndexAccepted:
    return IndexAccepted(repo=request.repo, generation=request.generation, source=request.source,
                         branch=request.branch)


@router.post("/api/v1/repos", response_model=IndexAccepted, status_code=202, responses=REPO_ERRORS)
def add_repo(body: AddRepoBody, _key: AdminKey) -> IndexAccepted:
    """Add a working tree on the code_search servers, or a git URL (``branch``: default the remote's), to
    index. Checked now (the directory exists; the remote answers and has the branch); indexed right after."""
    try:
        return _accepted(repo_admin.request_add(body.source, name=body.name, branch=body.branch))
    except repo_admin.RepoError as exc:
        raise HTTPException(exc.status, detail=exc.message) from exc


@router.post("/api/v1/repos/{name}/reindex", response_model=IndexAccepted, status_code=202, responses=REPO_ERRORS)
def reindex_repo(name: str, _key: AdminKey) -> IndexAccepted:
    """Index a repository again (a cloned one is fetched first); unchanged files cost a stat each."""
    try:
        return _accepted(repo_admin.request_reindex(name))
    except repo_admin.RepoError as exc:
        raise HTTPException(exc.status, detail=exc.message) from exc


# -- git push webhook -------------------------------------------------------------------------------


def _verify(provider: str, body: bytes, signature: str | None, token: str | None) -> None:
    secret = get_settings().search.git_webhook_secret
    if not secret:
        raise HTTPException(403, detail="the git webhook is disabled: set GIT_WEBHOOK_SECRET")
    if provider == "github":
        if not signature:
            raise HTTPException(401, detail="missing X-Hub-Signature-256")
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.strip().encode(), expected.encode()):
            raise HTTPException(403, detail="X-Hub-Signature-256 does not match the body and the secret")
    else:
        if not token:
            raise HTTPException(401, detail="missing X-Gitlab-Token")
        if not hmac.compare_digest(token.encode(), secret.encode()):
            raise HTTPException(403, detail="wrong X-Gitlab-Token")


@router.post("/webhooks/git", response_model=WebhookResponse, status_code=202)
async def git_webhook(
    request: Request,
    x_github_event: Annotated[str | None, Header()] = None,
    x_hub_signature_256: Annotated[str | None, Header()] = None,
    x_gitlab_event: Annotated[str | None, Header()] = None,
    x_gitlab_token: Annotated[str | None, Header()] = None,
) -> WebhookResponse:
    """A push re-indexes the repositories cloned from (or named like) the pushed one, when the pushed
    branch is the indexed one: a new generation each, indexed after the answer (GitHub waits 10 s at most)."""
    if x_github_event is None and x_gitlab_event is None:
        raise HTTPException(400, detail="not a GitHub (X-GitHub-Event) or GitLab (X-Gitlab-Event) webhook")
    provider = "github" if x_github_event is not None else "gitlab"
    body = await request.body()
    if len(body) > 25 * 1024 * 1024:
        raise HTTPException(413, detail="payload too large")
    _verify(provider, body, x_hub_signature_256, x_gitlab_token)
    event = (x_github_event or x_gitlab_event or "").lower()
    if event == "ping":
        return WebhookResponse(status="pong")
    if event not in ("push", "push hook"):
        return WebhookResponse(status="ignored", reason=f"event {event!r} is not a push")
    try:
        payload: dict[str, Any] = json.loads(body)
    except ValueError as exc:
        raise HTTPException(400, detail="the payload is not JSON") from exc
    if not isinstance(payload, dict):
        raise HTTPException(400, detail="the payload is not a JSON object")
    ref = str(payload.get("ref") or "")
    if not ref.startswith("refs/heads/"):
        return WebhookResponse(status="ignored", reason=f"{ref or 'no ref'} is not a branch")
    branch = ref.removeprefix("refs/heads/")
    project = payload.get("repository" if provider == "github" else "project") or {}
    if not isinstance(project, dict):
        raise HTTPException(400, detail="the payload names no repository")
    keys = ("clone_url", "ssh_url", "git_url", "html_url", "url") if provider == "github" else (
        "git_http_url", "git_ssh_url", "http_url", "web_url", "url"
    )
    remotes = [str(project[k]) for k in keys if project.get(k)]
    names = [str(project[k]) for k in ("name", "path") if project.get(k)]
    matched = await run_in_threadpool(repo_admin.repositories_for_push, remotes, names)
    on_branch = [
        name for name, entry in sorted(matched.items())
        if (entry.branch or entry.indexed_branch) in (None, "", branch)
    ]
    if not on_branch:
        reason = "no indexed repository for this remote" if not matched else f"branch {branch} is not indexed"
        return WebhookResponse(status="ignored", reason=reason)
    for name in on_branch:
        await run_in_threadpool(repo_admin.request_reindex, name, "push")
    return WebhookResponse(status="accepted", repos=on_branch)
