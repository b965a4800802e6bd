"""Accepting an inbound WhatsApp message: dedupe, user upsert, rate limit, outbox — one transaction.

Everything the webhook promises Twilio is durable when this returns: the message row and the
event that announces it commit together, so a crash or a broker outage after the 200 loses
nothing. The rate limit is counted in the database (the webhook must work while Redis is down).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from libs.common import db
from libs.common.events import Envelope, EventType, MessageReceived, ReplyReady, Service, derived_id
from libs.common.security import encrypt, normalise_address, user_id_for
from libs.common.settings import get_settings
from services.gateway.outbox import add_to_outbox
from services.gateway.sql import INBOUND, USERS, insert_for

log = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=1)
RATE_LIMIT_NOTICE = (
    "You're sending messages faster than I can answer them. "
    "Please wait a minute, then send your question again."
)
SOURCE = Service.GATEWAY.value


class Disposition(StrEnum):
    ACCEPTED = "accepted"
    RATE_LIMITED = "rate_limited"
    DUPLICATE = "duplicate"  # never stored: the first copy's row stands


@dataclass(frozen=True)
class InboundMessageIn:
    message_sid: str
    address: str  # "whatsapp:+E164" as Twilio sent it (From)
    body: str
    num_media: int = 0


@dataclass(frozen=True)
class InboundOutcome:
    disposition: Disposition
    user_id: str
    events_queued: int  # outbox rows written (0 for a duplicate or a silenced rate-limited message)


def record_inbound(message: InboundMessageIn, now: datetime | None = None) -> InboundOutcome:
    """Store ``message`` and queue what it causes, exactly once per MessageSid."""
    now = now or db.utcnow()
    settings = get_settings()
    user_id = user_id_for(message.address)
    inbound = INBOUND
    users = USERS
    with db.session_scope() as session:
        # The insert comes first: the primary key is the dedupe (a concurrent identical post waits
        # here for the first to commit, then inserts nothing), and on SQLite the transaction takes
        # the write lock up front instead of failing to upgrade a read snapshot later.
        stmt = insert_for(session, inbound).values(
            message_sid=message.message_sid,
            user_id=user_id,
            body_enc=encrypt(message.body),
            num_media=message.num_media,
            disposition=Disposition.ACCEPTED.value,
            received_at=now,
        )
        stmt = stmt.on_conflict_do_nothing(index_elements=["message_sid"]).returning(inbound.c.message_sid)
        if session.execute(stmt).first() is None:
            return InboundOutcome(Disposition.DUPLICATE, user_id, 0)

        # Upserting the user also locks its row (Postgres) until commit, which serialises one
        # user's concurrent messages through the rate-limit count below.
        upsert = insert_for(session, users).values(
            id=user_id,
            address_enc=encrypt(normalise_address(message.address)),
            created_at=now,
            last_inbound_at=now,
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "last_inbound_at": case(
                    (users.c.last_inbound_at.is_(None), upsert.excluded.last_inbound_at),
                    (users.c.last_inbound_at < upsert.excluded.last_inbound_at, upsert.excluded.last_inbound_at),
                    else_=users.c.last_inbound_at,
                )
            },
        ).returning(users.c.rate_noticed_at)
        rate_noticed_at = session.execute(upsert).scalar_one()

        limit = settings.conversation.rate_limit_per_minute
        if limit > 0:
            recent = session.execute(
                select(func.count())
                .select_from(inbound)
                .where(inbound.c.user_id == user_id)
                .where(inbound.c.received_at > now - RATE_WINDOW)
                .where(inbound.c.disposition == Disposition.ACCEPTED.value)
                .where(inbound.c.message_sid != message.message_sid)
            ).scalar_one()
            if recent >= limit:
                return _rate_limited(session, message, user_id, rate_noticed_at, now)

        received = MessageReceived(
            message_sid=message.message_sid,
            user_id=user_id,
            body=message.body,
            num_media=message.num_media,
            received_at=now,
        )
        add_to_outbox(
            session,
            Envelope.new(
                received,
                correlation_id=message.message_sid,
                source=SOURCE,
                event_id=derived_id(message.message_sid, EventType.MESSAGE_RECEIVED),
            ),
            user_id=user_id,
        )
    return InboundOutcome(Disposition.ACCEPTED, user_id, 1)


def _rate_limited(
    session: Session, message: InboundMessageIn, user_id: str, rate_noticed_at: datetime | None, now: datetime
) -> InboundOutcome:
    inbound = INBOUND
    users = USERS
    session.execute(
        update(inbound)
        .where(inbound.c.message_sid == message.message_sid)
        .values(disposition=Disposition.RATE_LIMITED.value)
    )
    if rate_noticed_at is not None and now - rate_noticed_at < RATE_WINDOW:
        return InboundOutcome(Disposition.RATE_LIMITED, user_id, 0)
    session.execute(update(users).where(users.c.id == user_id).values(rate_noticed_at=now))
    notice = ReplyReady(user_id=user_id, body=RATE_LIMIT_NOTICE, kind="notice")
    add_to_outbox(
        session,
        Envelope.new(
            notice,
            correlation_id=message.message_sid,
            source=SOURCE,
            event_id=derived_id(message.message_sid, EventType.REPLY_READY, "rate-limit"),
        ),
        user_id=user_id,
    )
    log.info("user %s is over the rate limit; notice queued for %s", user_id, message.message_sid)
    return InboundOutcome(Disposition.RATE_LIMITED, user_id, 1)
