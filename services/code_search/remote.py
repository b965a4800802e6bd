"""code_search's HTTP routes as served by a process that does not hold the index (the gateway, in
distributed mode): the same paths, request models and documented answers as ``api``, each request
checked here (API key, body) and then forwarded to a code_search worker (``CODE_SEARCH_URL``), which
searches its own index, or records the repository request, and answers. The answer goes back as is.

The API key is checked again by code_search: this is a convenience for the caller and a first filter,
not the only gate (the worker's port is also closed to anything but the gateway by the NetworkPolicy).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from libs.common import telemetry
from libs.common.api_keys import AUTH_RESPONSES, AdminKey, ErrorDetail
from libs.common.settings import get_settings
from services.code_search.api_models import (
    REPO_ERRORS,
    AddRepoBody,
    IndexAccepted,
    SearchBody,
    SearchResponse,
    WebhookResponse,
)

log = logging.getLogger(__name__)

# What code_search needs of a request: the key (it checks it again), the body's type, the webhooks' signatures.
FORWARDED_HEADERS = frozenset({
    "authorization", "x-api-key", "content-type", "x-github-event", "x-hub-signature-256", "x-gitlab-event",
    "x-gitlab-token", "traceparent", "tracestate",
})
RETURNED_HEADERS = ("www-authenticate", "retry-after")
SEARCH_TIMEOUT = 30.0
# Adding a git URL asks the remote first (git ls-remote, up to 30 s there).
ADMIN_TIMEOUT = 60.0
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorDetail, "description": "code_search cannot be reached"},
    504: {"model": ErrorDetail, "description": "code_search did not answer in time"},
}


async def forward(request: Request, timeout: float) -> Response:
    """Send ``request`` on to code_search unchanged (path, body, the headers it needs); its answer back."""
    base = get_settings().search.code_search_url.rstrip("/")
    path = request.scope.get("raw_path") or request.url.path.encode()
    url = base + path.decode("latin-1")
    headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
    parent = telemetry.traceparent()  # code_search's server span becomes a child of this request's
    if parent:
        headers["traceparent"] = parent
    body = await request.body()
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            upstream = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        log.warning("code_search did not answer %s within %.0f s", request.url.path, timeout)
        return JSONResponse({"detail": "code_search did not answer in time; try again"}, status_code=504)
    except httpx.HTTPError as exc:
        log.warning("code_search unreachable at %s for %s: %s", base, request.url.path, type(exc).__name__)
        return JSONResponse({"detail": "code_search cannot be reached; try again shortly"}, status_code=503,
                            headers={"Retry-After": "5"})
    returned = {k: upstream.headers[k] for k in RETURNED_HEADERS if k in upstream.headers}
    return Response(upstream.content, status_code=upstream.status_code, headers=returned,
                    media_type=upstream.headers.get("content-type"))


router = APIRouter(tags=["search"])


@router.post(
    "/api/v1/search", response_model=SearchResponse,
    responses={400: {"model": ErrorDetail}, **AUTH_RESPONSES, **UNAVAILABLE},
)
async def search_code(body: SearchBody, request: Request, _key: AdminKey) -> Response:
    """Search the indexed repositories (free text with repo:, path:, lang:, sym:, re:, case: filters).
    400 when the query itself is unusable (empty, longer than the limit, an invalid pattern or
    filter); other conditions (nothing indexed, unknown repository) come back as ``error`` with no hits."""
    return await forward(request, SEARCH_TIMEOUT)


@router.post("/api/v1/repos", response_model=IndexAccepted, status_code=202,
             responses={**REPO_ERRORS, **UNAVAILABLE})
async def add_repo(body: AddRepoBody, request: Request, _key: AdminKey) -> Response:
    """Add a working tree on the code_search servers, or a git URL (``branch``: default the remote's), to
    index. Checked now (the directory exists; the remote answers and has the branch); indexed right after."""
    return await forward(request, ADMIN_TIMEOUT)


@router.post("/api/v1/repos/{name}/reindex", response_model=IndexAccepted, status_code=202,
             responses={**REPO_ERRORS, **UNAVAILABLE})
async def reindex_repo(name: str, request: Request, _key: AdminKey) -> Response:
    """Index a repository again (a cloned one is fetched first); unchanged files cost a stat each."""
    return await forward(request, ADMIN_TIMEOUT)


@router.post("/webhooks/git", response_model=WebhookResponse, status_code=202, responses=UNAVAILABLE)
async def git_webhook(
    request: Request,
    x_github_event: Annotated[str | None, Header()] = None,
    x_hub_signature_256: Annotated[str | None, Header()] = None,
    x_gitlab_event: Annotated[str | None, Header()] = None,
    x_gitlab_token: Annotated[str | None, Header()] = None,
) -> Response:
    """A push re-indexes the repositories cloned from (or named like) the pushed one, when the pushed
    branch is the indexed one (the signature is checked by code_search, on the body as sent)."""
    return await forward(request, ADMIN_TIMEOUT)
