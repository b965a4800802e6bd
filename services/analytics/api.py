"""The analytics HTTP API (mounted by the lead): a summary of the last hours."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from libs.common.api_keys import AUTH_RESPONSES, ErrorDetail, require_api_key
from services.analytics.summary import MAX_HOURS, summary

log = logging.getLogger(__name__)

# Every route here needs an API key (and says so in the OpenAPI document).
router = APIRouter(
    prefix="/api/v1/analytics",
    tags=["analytics"],
    dependencies=[Depends(require_api_key)],
    responses={400: {"model": ErrorDetail}, 503: {"model": ErrorDetail}, **AUTH_RESPONSES},
)


class _Open(BaseModel):
    # Sections may grow: a key added by a newer summary reaches clients instead of being dropped.
    model_config = ConfigDict(extra="allow")


class Window(_Open):
    hours: float
    since: str
    until: str


class TurnCounts(_Open):
    received: int
    answered: int
    failed: int
    rate_limited: int
    commands: int
    pending: int
    users: int


class AICounts(_Open):
    input_tokens: int
    output_tokens: int
    cost_usd: float
    fallbacks: int = Field(description="turns that left at least one provider behind")
    fallbacks_taken: int = Field(description="providers given up, summed over turns")
    retries: int = Field(description="provider calls repeated, summed over turns")


class Summary(_Open):
    window: Window
    turns: TurnCounts
    messages_sent: int
    events: dict[str, int] = Field(description="events recorded, per type")
    latency_ms: dict[str, Any] = Field(description="end to end and per hop: count, p50, p95, p99")
    search: dict[str, Any] = Field(description="searches in total and per mode")
    answerers: dict[str, Any] = Field(description="turns answered per provider (or offline)")
    ai: AICounts
    errors_by_stage: dict[str, int]


@router.get("/summary", response_model=Summary)
def get_summary(
    hours: Annotated[
        float, Query(gt=0, le=MAX_HOURS, allow_inf_nan=False, description="Length of the window, ending now.")
    ] = 24,
) -> dict[str, Any]:
    """Turns, latency percentiles (end to end and per hop), search, answerers, tokens, cost, errors."""
    try:
        return summary(hours)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    except SQLAlchemyError as exc:
        log.error("analytics summary failed: %s", type(exc).__name__)
        raise HTTPException(status_code=503, detail="analytics database unavailable, try again shortly") from exc
