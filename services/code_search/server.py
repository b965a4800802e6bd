"""code_search's own HTTP server (distributed mode): the worker serves ``api``'s routes on
``CODE_SEARCH_PORT`` from this replica's index, for the gateway to forward to (``CODE_SEARCH_URL``)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from libs.common import telemetry
from services.code_search.api import router

log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    app = FastAPI(title="repotalk code_search", docs_url=None, redoc_url=None)
    app.include_router(router)
    telemetry.instrument_app(app)  # server spans, joined to the gateway's through traceparent (when tracing is on)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and why, never the value (as the gateway answers).
        detail: list[dict[str, Any]] = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid"), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable on %s: %s", request.url.path, type(exc.orig).__name__)
        return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.exception("error %s on %s", error_id, request.url.path)
        return JSONResponse({"detail": f"internal error {error_id}"}, status_code=500)

    return app


class ApiServer:
    """uvicorn in a daemon thread of the worker process."""

    def __init__(self, host: str, port: int) -> None:
        config = uvicorn.Config(create_app(), host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="code-search-api", daemon=True)

    def start(self, timeout: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"code_search's HTTP API did not start on port {self.server.config.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
