"""code_search's HTTP request and response models, apart from the engine: the gateway's forwarding routes
(``remote``) document the same API without importing the index, tantivy or numpy."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from libs.common.api_keys import AUTH_RESPONSES, ErrorDetail
from libs.common.events import Hit
from services.code_search.query import MAX_LIMIT


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


class AddRepoBody(BaseModel):
    source: str = Field(min_length=1, max_length=2000, description="a path on this server or a git URL")
    name: str | None = Field(default=None, max_length=100)
    branch: str | None = Field(default=None, max_length=200)


class IndexAccepted(BaseModel):
    """The request is recorded; every code_search replica indexes the repository at this generation
    or a later one. Progress: the console's repositories page, or ``repositories`` / ``index_progress``."""

    status: Literal["accepted"] = "accepted"
    repo: str
    generation: int
    source: str = Field(description="what is indexed: a path on the code_search replicas or a git URL (no credentials)")
    branch: str | None = None


# Each a RepoError's status: unusable source or name, unknown repository, another source under that
# name, a server path outside REPO_ROOTS, an unusable remote or branch, git missing, git too slow.
REPO_ERRORS: dict[int | str, dict[str, Any]] = {
    **{code: {"model": ErrorDetail} for code in (400, 404, 409, 422, 503, 504)},
    **AUTH_RESPONSES,
    403: {"model": ErrorDetail, "description": "The API key is wrong or revoked, or the path of the server to "
                                               "index is outside `REPO_ROOTS`"},
}


class WebhookResponse(BaseModel):
    status: Literal["accepted", "ignored", "pong"]
    repos: list[str] = Field(default_factory=list)
    reason: str | None = None
