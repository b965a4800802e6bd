"""The gateway's HTTP application: Twilio webhooks, status callbacks, health, the sandbox API.

``create_app`` also runs, for the process's lifetime, the inbound writer (the thread that stores
webhooks' messages) and the outbox relay (unless told not to, as tests do when they drive
``relay_once`` themselves).
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from libs.common import telemetry
from libs.common.settings import get_settings
from services.gateway import console, health, metrics_api, sandbox, webhooks
from services.gateway.inbound_writer import InboundWriter
from services.gateway.limits import body_limit, limit_request_body
from services.gateway.outbox import OutboxRelay

log = logging.getLogger(__name__)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only where and why: the offending input may be personal data and is never echoed back.
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", "invalid"), "type": error.get("type", "")}
        for error in exc.errors()
    ]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_errors(exc)}, status_code=422)

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503,
                                headers={"Retry-After": "5"})
        error_id = uuid.uuid4().hex[:12]
        log.error("database error %s on %s %s: %s", error_id, request.method, request.url.path,
                  type(exc.orig).__name__)
        return JSONResponse({"detail": f"internal error (id {error_id})"}, status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.url.path)
        return JSONResponse({"detail": f"internal error (id {error_id})"}, status_code=500)


class GatewayApp(FastAPI):
    """FastAPI, with Twilio's inbound webhook served ahead of the middleware and routing layers.

    That one endpoint takes every message of every user and must answer within milliseconds; the
    generic layers (error and telemetry middlewares, exit stacks, matching every route) cost it as
    much CPU as its own work. It is served by the same endpoint function with the same error
    handlers. Any user middleware turns the shortcut off: it then sees every request. Tracing keeps it,
    wrapped in the ASGI tracing middleware (``inbound_asgi``), so the webhook still has its server span.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == webhooks.INBOUND_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self.user_middleware
        ):
            # With tracing on, telemetry wraps the shortcut in the ASGI tracing middleware (the server span).
            await (self.inbound_asgi or self.serve_inbound)(scope, receive, send)
            return
        if scope["type"] == "http":
            limit = body_limit(scope["path"], get_settings().app)
            await limit_request_body(super().__call__, scope, receive, send, limit)
            return
        await super().__call__(scope, receive, send)

    inbound_asgi: ASGIApp | None = None

    async def serve_inbound(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await webhooks.inbound_message(request)
        except Exception as exc:
            response = await self._handled(request, exc)
        await response(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The response the app's exception handlers give for ``exc`` (as the middlewares would)."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, exc)
                if inspect.isawaitable(response):
                    response = await response
                return cast(Response, response)
        raise exc


def create_app(extra_routers: Sequence[APIRouter] = (), start_relay: bool = True) -> FastAPI:
    """The gateway application; ``extra_routers`` are mounted as they are (other services' APIs)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        relay: OutboxRelay | None = None
        if start_relay:
            relay = OutboxRelay(interval=get_settings().broker.outbox_relay_interval)
            relay.start()
            relay.wake()  # rows left pending by a previous run or a broker outage
        writer = InboundWriter(on_queued=relay.wake if relay is not None else None)
        writer.start()
        app.state.relay = relay
        app.state.writer = writer
        try:
            yield
        finally:
            # Requests are over by now (the server drains them before the lifespan ends).
            writer.stop()
            app.state.writer = None
            if relay is not None:
                relay.stop()
            app.state.relay = None
            # The last requests' and relay passes' spans go out now: uvicorn ends the process with the signal that
            # stopped it (re-raised once it has shut down), so exit handlers never run.
            telemetry.flush()

    app = GatewayApp(title="repotalk gateway", version="0.1.0", lifespan=lifespan)
    app.state.relay = None
    app.state.writer = None
    _install_error_handlers(app)
    telemetry.instrument_app(app)
    for router in (webhooks.router, webhooks.status_router, health.router, metrics_api.router, sandbox.router,
                   *extra_routers):
        app.include_router(router)
    console.install(app)
    return app
