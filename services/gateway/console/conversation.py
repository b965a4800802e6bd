"""What the playground shows of one WhatsApp user: their messages and repotalk's replies.

Read from the gateway's own tables (inbound_messages, outbound_messages) through the user's keyed
hash, exactly as stored by the real path. Bodies are decrypted only to be shown to that same user.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from libs.common import db
from libs.common.security import decrypt, user_id_for
from services.gateway.console.formatting import plain, render
from services.gateway.sql import INBOUND, OUTBOUND

# A WhatsApp number: + and 7-15 digits, the first not 0 (E.164).
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
HISTORY_LIMIT = 100
# How long a question may wait for its answer before the typing indicator gives up on it.
TYPING_WINDOW = timedelta(seconds=120)
_IN_FLIGHT = frozenset({"pending", "sending"})


class BadNumber(ValueError):
    pass


def whatsapp_address(number: str) -> str:
    """'+1 555 000-1111' or 'whatsapp:+15550001111' -> 'whatsapp:+15550001111'; BadNumber otherwise."""
    raw = number.strip().removeprefix("whatsapp:")
    digits = "+" + "".join(ch for ch in raw if ch.isdigit()) if raw.startswith("+") else ""
    if not _E164.match(digits) or re.search(r"[^\d+\s().-]", raw):
        raise BadNumber("a phone number is + and the country code, then 6 to 14 digits (E.164), e.g. +15550001111")
    return f"whatsapp:{digits}"


@dataclass(frozen=True)
class Bubble:
    id: str  # "in:<MessageSid>" or "out:<row id>"
    direction: str  # "in" (the user's) or "out" (repotalk's)
    html: str
    text: str  # without formatting markers, for announcements
    at: str  # ISO 8601, UTC
    status: str  # the tick: sent | delivered | read | failed | pending
    correlation_id: str
    provider_sid: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Conversation:
    bubbles: list[Bubble]
    typing: bool


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")


def _tick(status: str) -> str:
    if status in ("failed", "undelivered", "canceled"):
        return "failed"
    if status in _IN_FLIGHT:
        return "pending"
    if status in ("delivered", "read"):
        return status
    return "sent"


def load(address: str, now: datetime | None = None) -> Conversation:
    """The latest messages between ``address`` and repotalk, oldest first, and whether one is being answered."""
    user_id = user_id_for(address)
    now = now or db.utcnow()
    with db.session_scope() as session:
        inbound = session.execute(
            select(INBOUND.c.message_sid, INBOUND.c.body_enc, INBOUND.c.disposition, INBOUND.c.received_at)
            .where(INBOUND.c.user_id == user_id)
            .order_by(INBOUND.c.received_at.desc())
            .limit(HISTORY_LIMIT)
        ).all()
        outbound = session.execute(
            select(
                OUTBOUND.c.id, OUTBOUND.c.correlation_id, OUTBOUND.c.body_enc, OUTBOUND.c.status,
                OUTBOUND.c.created_at, OUTBOUND.c.chunk_index, OUTBOUND.c.provider_sid,
            )
            .where(OUTBOUND.c.user_id == user_id)
            .order_by(OUTBOUND.c.created_at.desc(), OUTBOUND.c.id.desc())
            .limit(HISTORY_LIMIT)
        ).all()
    answered = {row.correlation_id for row in outbound}
    bubbles: list[tuple[datetime, int, Bubble]] = []
    for row in inbound:
        body = _decrypted(row.body_enc)
        # WhatsApp's ticks on one's own message: two once it reached repotalk, blue once answered.
        status = "read" if row.message_sid in answered else "delivered"
        bubbles.append((row.received_at, 0, Bubble(
            id=f"in:{row.message_sid}", direction="in", html=render(body), text=plain(body), at=_iso(row.received_at),
            status=status, correlation_id=row.message_sid,
        )))
    for out in outbound:
        body = _decrypted(out.body_enc)
        bubbles.append((out.created_at, 1 + out.chunk_index, Bubble(
            id=f"out:{out.id}", direction="out", html=render(body), text=plain(body), at=_iso(out.created_at),
            status=_tick(out.status), correlation_id=out.correlation_id, provider_sid=out.provider_sid,
        )))
    bubbles.sort(key=lambda item: (item[0], item[1]))
    waiting = any(
        row.disposition == "accepted" and row.message_sid not in answered and now - row.received_at < TYPING_WINDOW
        for row in inbound
    )
    sending = any(out.status in _IN_FLIGHT for out in outbound)
    return Conversation(bubbles=[b for _, _, b in bubbles][-HISTORY_LIMIT:], typing=waiting or sending)


def _decrypted(token: str) -> str:
    try:
        return decrypt(token)
    except ValueError:
        # Encrypted under a key no longer configured: shown as such rather than failing the page.
        return "(this message can no longer be decrypted)"
