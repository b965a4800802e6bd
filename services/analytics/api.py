"""The analytics HTTP API (mounted by the lead): a summary of the last hours."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy.exc import SQLAlchemyError

from services.analytics.summary import MAX_HOURS, summary

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"])


@router.get("/summary")
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
