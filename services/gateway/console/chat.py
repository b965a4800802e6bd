"""The chat playground: a WhatsApp-like page that is a client of the real webhook path.

A message typed in the page becomes a Twilio-signed webhook submitted to this application's own
``/webhooks/twilio``; replies are read from the sandbox channel's rows (outbound_messages) and
pushed to the page as server-sent events, so they appear without a reload in both modes (in
distributed mode the rows are written by the gateway worker, another process: the database is the
one place both modes share).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from libs.common.settings import get_settings
from services.gateway.console import access, conversation, loopback
from services.gateway.console.pages import login_redirect, page

log = logging.getLogger(__name__)

router = APIRouter(prefix="/console/chat", tags=["console"], include_in_schema=False)

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
# A stream ends after this long and the browser reconnects (EventSource does by itself): a server
# stopping gracefully is never held up for longer by an open page.
STREAM_SECONDS = 60.0
PRESET_NUMBERS = ("+15550001111", "+15550002222", "+447700900123", "+34600111222")


class SendBody(BaseModel):
    number: str = Field(min_length=1, max_length=40, description="the WhatsApp number to act as (E.164)")
    body: str = Field(min_length=1, max_length=20_000)


class SendResult(BaseModel):
    message_sid: str
    status: str = "accepted"


class ReadBody(BaseModel):
    number: str = Field(min_length=1, max_length=40)


def _address(number: str) -> str:
    try:
        return conversation.whatsapp_address(number)
    except conversation.BadNumber as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("", response_class=HTMLResponse)
async def chat_page(request: Request) -> Response:
    operator = await access.operator_of(request)
    if not access.playground_open() and operator is None:
        return login_redirect(request)
    return page(request, "chat.html", active="chat", operator=operator, presets=PRESET_NUMBERS,
                sandbox=get_settings().twilio.sandbox, business=get_settings().twilio.whatsapp_from)


@router.post("/messages", response_model=SendResult, status_code=202)
async def send_message(body: SendBody, request: Request, _: access.PlaygroundDep) -> SendResult:
    """Submit the message as a signed Twilio webhook; the gateway's refusal, if any, is passed on."""
    address = _address(body.number)
    if not body.body.strip():
        raise HTTPException(400, "the message is empty")
    message_sid = loopback.new_message_sid()
    response = await loopback.post_inbound(request.app, address, body.body, message_sid)
    if response.status_code != 200:
        detail = _detail(response)
        log.warning("the webhook refused a console message: %s", response.status_code)
        raise HTTPException(response.status_code if response.status_code < 500 else 502,
                            f"the webhook refused the message: {detail}")
    return SendResult(message_sid=message_sid)


@router.post("/read", status_code=200)
async def mark_read(body: ReadBody, request: Request, _: access.PlaygroundDep) -> dict[str, int]:
    """The page has shown the replies: report them read, as WhatsApp does, through signed status
    callbacks. Only for the sandbox: a real Twilio message's status comes from Twilio alone."""
    address = _address(body.number)
    if not get_settings().twilio.sandbox:
        return {"read": 0}
    current = await run_in_threadpool(conversation.load, address)
    sids = [b.provider_sid for b in current.bubbles if b.direction == "out" and b.status == "delivered"
            and b.provider_sid]
    read = 0
    for sid in sids:
        response = await loopback.post_status(request.app, sid, "read")
        read += response.status_code == 200
    return {"read": read}


@router.get("/history")
async def history(number: str, _: access.PlaygroundDep) -> dict[str, Any]:
    current = await run_in_threadpool(conversation.load, _address(number))
    return {"bubbles": [b.as_json() for b in current.bubbles], "typing": current.typing}


@router.get("/stream")
async def stream(request: Request, _: access.PlaygroundDep,
                 number: str = Query(max_length=40)) -> StreamingResponse:
    """Server-sent events: ``snapshot`` (everything), then ``bubble`` (new or changed) and ``typing``."""
    address = _address(number)
    return StreamingResponse(
        _events(request, address), media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _events(request: Request, address: str) -> AsyncIterator[str]:
    shown: dict[str, str] = {}  # bubble id -> status the page has
    typing: bool | None = None
    last_sent = started = time.monotonic()
    yield "retry: 1000\n\n"
    while not await request.is_disconnected() and time.monotonic() - started < STREAM_SECONDS:
        current = await run_in_threadpool(conversation.load, address)
        ids = {b.id for b in current.bubbles}
        chunks: list[str] = []
        if typing is None or any(known not in ids for known in shown):
            # First push, or messages vanished (/delete erased them): the page redraws everything.
            chunks.append(_event("snapshot", {"bubbles": [b.as_json() for b in current.bubbles],
                                              "typing": current.typing}))
            shown = {b.id: b.status for b in current.bubbles}
        else:
            for bubble in current.bubbles:
                if shown.get(bubble.id) != bubble.status:
                    chunks.append(_event("bubble", bubble.as_json()))
                    shown[bubble.id] = bubble.status
            if current.typing != typing:
                chunks.append(_event("typing", {"typing": current.typing}))
        typing = current.typing
        if not chunks and time.monotonic() - last_sent > HEARTBEAT_SECONDS:
            chunks.append(": keep-alive\n\n")
        if chunks:
            last_sent = time.monotonic()
            yield "".join(chunks)
        await asyncio.sleep(POLL_SECONDS)


def _detail(response: Any) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.text[:200] or response.status_code)
