"""The sandbox channel's read side: replies kept in the database when no Twilio account is set.

``repotalk ask`` posts a signed webhook, then polls this endpoint for the answer.

Authenticated by the Twilio auth token, not by an API key, on purpose: the sandbox stands in for
Twilio, and whoever holds that token can already sign webhooks as any user and (at Twilio) read
every reply, so it grants nothing new; `repotalk ask/chat` hold it anyway, and need no second
secret. The endpoint exists only while no Twilio account is configured (404 otherwise).
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from sqlalchemy import select

from libs.common import db
from libs.common.security import decrypt
from libs.common.settings import get_settings
from services.gateway.sql import OUTBOUND

router = APIRouter(prefix="/api/v1/sandbox", tags=["sandbox"])

# A chunk that reached one of these has been handed to the (sandbox) channel for good.
_SETTLED = frozenset({"accepted", "queued", "sent", "delivered", "read", "failed", "undelivered"})


class SandboxReply(BaseModel):
    chunk_index: int
    chunk_count: int
    body: str
    status: str
    created_at: datetime


class SandboxReplies(BaseModel):
    message_sid: str
    replies: list[SandboxReply]
    complete: bool


def _authorize(authorization: str | None) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    expected = get_settings().twilio.auth_token
    if scheme.lower() != "bearer" or not token or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


def _load(message_sid: str) -> SandboxReplies:
    table = OUTBOUND
    with db.session_scope() as session:
        rows = session.execute(
            select(
                table.c.reply_id, table.c.chunk_index, table.c.chunk_count, table.c.body_enc, table.c.status,
                table.c.created_at, table.c.id,
            ).where(table.c.correlation_id == message_sid)
        ).all()
    by_reply: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_reply[row.reply_id].append(row)
    replies: list[SandboxReply] = []
    complete = bool(by_reply)
    # Replies in the order they were created; chunks in order within each.
    for chunks in sorted(by_reply.values(), key=lambda rs: min((r.created_at, r.id) for r in rs)):
        chunks.sort(key=lambda r: r.chunk_index)
        settled = [r for r in chunks if r.status in _SETTLED]
        if len(settled) < chunks[0].chunk_count:
            complete = False
        replies.extend(
            SandboxReply(
                chunk_index=r.chunk_index, chunk_count=r.chunk_count, body=decrypt(r.body_enc), status=r.status,
                created_at=r.created_at,
            )
            for r in chunks
        )
    return SandboxReplies(message_sid=message_sid, replies=replies, complete=complete)


class _Problem(BaseModel):
    detail: str


# Documents the scheme in the OpenAPI document; the check itself is _authorize's.
_twilio_token = HTTPBearer(
    auto_error=False,
    scheme_name="TwilioAuthToken",
    description="The gateway's TWILIO_AUTH_TOKEN as `Authorization: Bearer <token>` (sandbox channel only)",
)


@router.get(
    "/replies/{message_sid}",
    response_model=SandboxReplies,
    summary="Replies kept by the sandbox channel",
    dependencies=[Security(_twilio_token)],
    responses={401: {"model": _Problem}, 404: {"model": _Problem}},
)
def sandbox_replies(
    message_sid: str, authorization: Annotated[str | None, Header()] = None
) -> SandboxReplies:
    if not get_settings().twilio.sandbox:
        raise HTTPException(404, "the sandbox channel is not active (a Twilio account is configured)")
    _authorize(authorization)
    return _load(message_sid)
