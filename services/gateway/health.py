"""Liveness and readiness.

/health says the process serves requests. /ready says it can do its job: the database answers
and the broker is reachable (the in-memory broker always is; Redis gets a PING with a short
timeout). Each check runs with a deadline so a hung dependency cannot hang the probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from libs.common import db
from libs.common.health import CHECK_TIMEOUT, broker_reachable
from libs.common.settings import get_settings

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness")
def health() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, probe: Callable[..., bool], *args: Any) -> tuple[str, bool]:
    try:
        ok = await asyncio.wait_for(run_in_threadpool(probe, *args), timeout=CHECK_TIMEOUT + 1)
    except Exception:  # a timeout included: the dependency is not ready
        ok = False
    return name, bool(ok)


@router.get("/ready", summary="Readiness: database and broker reachable")
async def ready() -> JSONResponse:
    settings = get_settings()
    results = await asyncio.gather(
        _check("database", db.ping),
        _check("broker", broker_reachable, settings.broker.url, min(CHECK_TIMEOUT, settings.broker.publish_timeout)),
    )
    failed = [name for name, ok in results if not ok]
    if failed:
        return JSONResponse(
            {"status": "unavailable", "failed": failed, "detail": "unreachable: " + ", ".join(failed)},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "checks": {name: "ok" for name, _ in results}})
