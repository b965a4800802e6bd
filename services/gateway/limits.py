"""Request body limits, applied by the gateway application itself (a plain ASGI wrapper).

Not a Starlette middleware: any user middleware turns off the inbound webhook's fast path (see
``GatewayApp``). That path enforces ``MAX_REQUEST_BYTES`` in its own handler while reading.

A declared ``Content-Length`` over the limit is refused before the body is read; a chunked body is
counted as it arrives and refused as soon as it passes the limit, so nothing larger is ever buffered.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.common.settings import AppSettings

TWILIO_WEBHOOKS = "/webhooks/twilio"
# GitHub caps webhook payloads at 25 MB (pushes with many commits get close); GitLab sends less.
OTHER_WEBHOOKS_MAX_BYTES = 25 * 1024 * 1024


def body_limit(path: str, app: AppSettings) -> int:
    """The largest body a request to ``path`` may carry."""
    if path.startswith(TWILIO_WEBHOOKS):
        return app.max_request_bytes  # Twilio's own webhooks are a few kilobytes
    if path.startswith("/webhooks/"):
        return OTHER_WEBHOOKS_MAX_BYTES
    return app.max_api_request_bytes


def _too_large(size: int | None, limit: int) -> str:
    if size is None:
        return f"request body exceeds the limit of {limit} bytes"
    return f"request body of {size} bytes exceeds the limit of {limit} bytes"


async def limit_request_body(app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """Run ``app`` on an HTTP request whose body may not exceed ``limit`` bytes (413 with a reason)."""
    declared = Headers(scope=scope).get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            await JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)(scope, receive, send)
            return
        if length > limit:
            await JSONResponse({"detail": _too_large(length, limit)}, status_code=413)(scope, receive, send)
            return

    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                # FastAPI re-raises an HTTPException met while reading the body: the app's handlers answer.
                raise HTTPException(413, detail=_too_large(None, limit))
        return message

    await app(scope, limited_receive, send)
