"""`GET /metrics`: the gateway process's Prometheus metrics, the outbox backlog and the queue depths."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from libs.common import metrics
from services.gateway.outbox import pending_count

router = APIRouter(tags=["health"])


def _register_collectors() -> None:
    metrics.register("outbox_backlog", metrics.CallbackGauge(
        "repotalk_outbox_backlog", "Outbox events accepted but not yet published to the broker", pending_count))
    metrics.register_queue_depth()


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def scrape(request: Request) -> Response:
    _register_collectors()
    # Collectors query the database and Redis: off the event loop.
    body, content_type = await run_in_threadpool(metrics.exposition, request.headers.get("accept"))
    return Response(content=body, media_type=content_type)
