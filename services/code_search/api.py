"""HTTP side of code_search: ``POST /api/v1/search``, the repository admin API
(``POST /api/v1/repos``, ``POST /api/v1/repos/{name}/reindex``) and the git push webhook
(``POST /webhooks/git``, GitHub and GitLab)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Header, HTTPException, Request
from pydantic import BaseModel, Field

from libs.common.events import Hit
from libs.common.settings import get_settings
from services.code_search import repos as repo_admin
from services.code_search.engine import CLIENT_ERRORS, MAX_LIMIT, search
from services.code_search.indexer import IndexSummary
from services.code_search.query import MAX_QUERY_CHARS

log = logging.getLogger(__name__)

router = APIRouter(tags=["search"])


class SearchBody(BaseModel):
    # Lengths are checked by the engine so that every refusal carries the same clear reason.
    query: str
    repos: list[str] | None = Field(default=None, max_length=50)
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    mode: Literal["question", "pattern"] = "question"


class FileHits(BaseModel):
    repo: str
    path: str
    language: str | None = None
    hits: list[Hit]


class SearchResponse(BaseModel):
    hits: list[Hit]
    took_ms: float
    kinds: list[str]
    error: str | None = None
    files: list[FileHits] = Field(default_factory=list)  # the same hits, per file, best file first


@router.post("/api/v1/search", response_model=SearchResponse)
def search_code(body: SearchBody) -> SearchResponse:
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


class AddRepoBody(BaseModel):
    source: str = Field(min_length=1, max_length=2000, description="a path on this server or a git URL")
    name: str | None = Field(default=None, max_length=100)
    branch: str | None = Field(default=None, max_length=200)


class IndexResponse(BaseModel):
    repo: str
    files: int
    symbols: int
    chunks: int
    indexed: int
    unchanged: int
    removed: int
    skipped: dict[str, int]
    commit: str | None
    seconds: float


def _summary(summary: IndexSummary) -> IndexResponse:
    return IndexResponse(
        repo=summary.repo, files=summary.files, symbols=summary.symbols, chunks=summary.chunks,
        indexed=summary.indexed, unchanged=summary.unchanged, removed=summary.removed, skipped=summary.skipped,
        commit=summary.commit, seconds=summary.seconds,
    )


def _require_admin(authorization: str | None) -> None:
    settings = get_settings()
    token = settings.search.admin_token
    if not token:
        if settings.app.env == "production":
            raise HTTPException(403, detail="the repository admin API is disabled: set SEARCH_ADMIN_TOKEN")
        return
    if not authorization:
        raise HTTPException(401, detail="missing Authorization: Bearer <SEARCH_ADMIN_TOKEN>")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(403, detail="wrong admin token")


AuthorizationHeader = Annotated[str | None, Header()]


@router.post("/api/v1/repos", response_model=IndexResponse, status_code=201)
def add_repo(body: AddRepoBody, authorization: AuthorizationHeader = None) -> IndexResponse:
    """Index a working tree on this server, or clone a git URL (``branch``: default the remote's) and index it."""
    _require_admin(authorization)
    try:
        return _summary(repo_admin.add_repository(body.source, name=body.name, branch=body.branch))
    except repo_admin.RepoError as exc:
        raise HTTPException(exc.status, detail=exc.message) from exc


@router.post("/api/v1/repos/{name}/reindex", response_model=IndexResponse)
def reindex_repo(name: str, authorization: AuthorizationHeader = None) -> IndexResponse:
    """Index a repository again (a cloned one is fetched first); unchanged files cost a stat each."""
    _require_admin(authorization)
    try:
        return _summary(repo_admin.reindex(name))
    except repo_admin.RepoError as exc:
        raise HTTPException(exc.status, detail=exc.message) from exc


# -- git push webhook -------------------------------------------------------------------------------


class WebhookResponse(BaseModel):
    status: Literal["accepted", "ignored", "pong"]
    repos: list[str] = Field(default_factory=list)
    reason: str | None = None


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


def _reindex_quietly(names: list[str]) -> None:
    for name in names:
        try:
            summary = repo_admin.reindex(name)
            log.info("push re-index: %s", summary.describe())
        except Exception:
            log.exception("push re-index of %s failed", name)


@router.post("/webhooks/git", response_model=WebhookResponse, status_code=202)
async def git_webhook(
    request: Request,
    background: BackgroundTasks,
    x_github_event: Annotated[str | None, Header()] = None,
    x_hub_signature_256: Annotated[str | None, Header()] = None,
    x_gitlab_event: Annotated[str | None, Header()] = None,
    x_gitlab_token: Annotated[str | None, Header()] = None,
) -> WebhookResponse:
    """A push re-indexes the repositories cloned from (or named like) the pushed one, when the pushed
    branch is the indexed one. The indexing runs after the answer (GitHub waits 10 s at most)."""
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
    matched = repo_admin.repositories_for_push(remotes, names)
    known = repo_admin.get_index().repositories()
    on_branch = [n for n in matched if not known[n].branch or known[n].branch == branch]
    if not on_branch:
        reason = "no indexed repository for this remote" if not matched else f"branch {branch} is not indexed"
        return WebhookResponse(status="ignored", reason=reason)
    background.add_task(_reindex_quietly, on_branch)
    return WebhookResponse(status="accepted", repos=on_branch)
