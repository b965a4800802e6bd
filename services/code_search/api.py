"""HTTP search over the indexed repositories: ``POST /api/v1/search``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from libs.common.events import Hit
from services.code_search.engine import CLIENT_ERRORS, MAX_LIMIT, search
from services.code_search.query import MAX_QUERY_CHARS

router = APIRouter(prefix="/api/v1", tags=["search"])


class SearchBody(BaseModel):
    # Lengths are checked by the engine so that every refusal carries the same clear reason.
    query: str
    repos: list[str] | None = Field(default=None, max_length=50)
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    mode: Literal["question", "pattern"] = "question"


class SearchResponse(BaseModel):
    hits: list[Hit]
    took_ms: float
    kinds: list[str]
    error: str | None = None


@router.post("/search", response_model=SearchResponse)
def search_code(body: SearchBody) -> SearchResponse:
    """Search the indexed repositories. 400 when the query itself is unusable (empty, longer than
    the limit, an invalid pattern); other conditions (nothing indexed, unknown repository) come
    back as ``error`` with no hits."""
    if len(body.query) > 4 * MAX_QUERY_CHARS:
        raise HTTPException(400, detail=f"the search is too long (at most {MAX_QUERY_CHARS} characters)")
    result = search(body.query, repos=body.repos, limit=body.limit or 8, mode=body.mode)
    if result.code in CLIENT_ERRORS:
        raise HTTPException(400, detail=result.error)
    return SearchResponse(hits=result.hits, took_ms=result.took_ms, kinds=result.kinds, error=result.error)
