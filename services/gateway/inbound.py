"""Accepting an inbound WhatsApp message: dedupe, user upsert, rate limit, outbox — one transaction.

Everything the webhook promises Twilio is durable when this returns: the message row and the
event that announces it commit together, so a crash or a broker outage after the 200 loses
nothing. The rate limit is counted in the database (the webhook must work while Redis is down).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import Connection, Integer, String, Text, bindparam, case, func, literal, select, update
from sqlalchemy.dialects import postgresql

from libs.common import db
from libs.common.db import UTCDateTime
from libs.common.events import Envelope, EventType, MessageReceived, ReplyReady, Service, derived_id
from libs.common.security import encrypt, normalise_address, user_id_for
from libs.common.settings import get_settings
from services.gateway import redaction
from services.gateway.outbox import add_to_outbox, outbox_row
from services.gateway.sql import INBOUND, OUTBOX, USERS, dialect_insert

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
    trace: str | None = None  # the webhook request's traceparent: the turn's trace continues from it


@dataclass(frozen=True)
class InboundOutcome:
    disposition: Disposition
    user_id: str
    events_queued: int  # outbox rows written (0 for a duplicate or a silenced rate-limited message)


@dataclass(frozen=True)
class _Statements:
    insert_inbound: Any
    upsert_user: Any
    count_recent: Any
    mark_rate_limited: Any
    note_rate_notice: Any


@cache
def _statements(dialect: str) -> _Statements:
    """The transaction's statements, built once per dialect (executed with parameters)."""
    inbound = INBOUND
    users = USERS
    upsert = dialect_insert(dialect, users)
    return _Statements(
        insert_inbound=dialect_insert(dialect, inbound)
        .on_conflict_do_nothing(index_elements=["message_sid"])
        .returning(inbound.c.message_sid),
        upsert_user=upsert.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "last_inbound_at": case(
                    (users.c.last_inbound_at.is_(None), upsert.excluded.last_inbound_at),
                    (users.c.last_inbound_at < upsert.excluded.last_inbound_at, upsert.excluded.last_inbound_at),
                    else_=users.c.last_inbound_at,
                )
            },
        ).returning(users.c.rate_noticed_at),
        count_recent=select(func.count())
        .select_from(inbound)
        .where(inbound.c.user_id == bindparam("user_id"))
        .where(inbound.c.received_at > bindparam("since"))
        .where(inbound.c.disposition == Disposition.ACCEPTED.value)
        .where(inbound.c.message_sid != bindparam("message_sid")),
        mark_rate_limited=update(inbound)
        .where(inbound.c.message_sid == bindparam("sid"))
        .values(disposition=Disposition.RATE_LIMITED.value),
        note_rate_notice=update(users)
        .where(users.c.id == bindparam("user_id"))
        .values(rate_noticed_at=bindparam("now")),
    )


def record_inbound(message: InboundMessageIn, now: datetime | None = None) -> InboundOutcome:
    """Store ``message`` and queue what it causes, exactly once per MessageSid, in its own transaction."""
    with db.get_engine().begin() as conn:
        return store_inbound(conn, message, now)


def store_inbound(conn: Connection, message: InboundMessageIn, now: datetime | None = None) -> InboundOutcome:
    """``record_inbound`` within the caller's transaction on ``conn`` (the inbound writer commits
    several messages at once); the message is durable once that transaction commits."""
    now = now or db.utcnow()
    limit = get_settings().conversation.rate_limit_per_minute
    user_id = user_id_for(message.address)
    event = Envelope.new(
        MessageReceived(
            message_sid=message.message_sid,
            user_id=user_id,
            body=message.body,
            num_media=message.num_media,
            received_at=now,
        ),
        correlation_id=message.message_sid,
        source=SOURCE,
        event_id=derived_id(message.message_sid, EventType.MESSAGE_RECEIVED),
        trace=message.trace,
    )
    params = {
        "message_sid": message.message_sid,
        "user_id": user_id,
        "body_enc": encrypt(message.body),
        "num_media": message.num_media,
        "now": now,
        "address_enc": encrypt(normalise_address(message.address)),
    }
    if conn.dialect.name == "postgresql":
        outcome = _store_postgres(conn, message, event, params, limit)
    else:
        outcome = _store_portable(conn, message, event, params, limit)
    if outcome.disposition is not Disposition.DUPLICATE and redaction.enabled():
        # Stored here (encrypted): Twilio's copy of the body is no longer needed.
        redaction.queue_redaction(conn, message.message_sid, "inbound", message.message_sid)
        outcome = replace(outcome, events_queued=outcome.events_queued + 1)
    return outcome


def _store_portable(
    conn: Connection, message: InboundMessageIn, event: Envelope, params: dict[str, Any], limit: int
) -> InboundOutcome:
    user_id: str = params["user_id"]
    now: datetime = params["now"]
    stmts = _statements(conn.dialect.name)
    # The insert comes first: the primary key is the dedupe (a concurrent identical post waits
    # here for the first to commit, then inserts nothing), and on SQLite the transaction takes
    # the write lock up front instead of failing to upgrade a read snapshot later.
    inserted = conn.execute(
        stmts.insert_inbound,
        {
            "message_sid": message.message_sid,
            "user_id": user_id,
            "body_enc": params["body_enc"],
            "num_media": message.num_media,
            "disposition": Disposition.ACCEPTED.value,
            "received_at": now,
        },
    ).first()
    if inserted is None:
        return InboundOutcome(Disposition.DUPLICATE, user_id, 0)

    # Upserting the user also locks its row (Postgres) until commit, which serialises one
    # user's concurrent messages through the rate-limit count below.
    rate_noticed_at = conn.execute(
        stmts.upsert_user,
        {"id": user_id, "address_enc": params["address_enc"], "created_at": now, "last_inbound_at": now},
    ).scalar_one()

    if limit > 0:
        recent = conn.execute(
            stmts.count_recent,
            {"user_id": user_id, "since": now - RATE_WINDOW, "message_sid": message.message_sid},
        ).scalar_one()
        if recent >= limit:
            return _rate_limited(conn, stmts, message, user_id, rate_noticed_at, now)
    add_to_outbox(conn, event, user_id=user_id)
    return InboundOutcome(Disposition.ACCEPTED, user_id, 1)


def _store_postgres(
    conn: Connection, message: InboundMessageIn, event: Envelope, params: dict[str, Any], limit: int
) -> InboundOutcome:
    """The same steps as ``_store_portable`` in one or two statements (data-modifying CTEs): a round
    trip to the database costs more CPU than the statement it carries."""
    user_id: str = params["user_id"]
    now: datetime = params["now"]
    row = outbox_row(event, user_id)
    params.update(event_id=row["id"], event_type=row["event_type"], envelope=row["envelope"])
    pg = _pg_statements()
    if limit <= 0:
        inserted, _, queued = conn.execute(pg.accept, params).one()
        if not inserted:
            return InboundOutcome(Disposition.DUPLICATE, user_id, 0)
        return InboundOutcome(Disposition.ACCEPTED, user_id, int(queued))
    # The rate-limit count must run after the user row is locked (a statement's snapshot is taken
    # when it starts): one statement stores and locks, the next counts and queues the event.
    inserted, rate_noticed_at = conn.execute(pg.store_and_lock_user, params).one()
    if not inserted:
        return InboundOutcome(Disposition.DUPLICATE, user_id, 0)
    params.update(since=now - RATE_WINDOW, limit=limit)
    _, queued = conn.execute(pg.count_and_queue, params).one()
    if queued:
        return InboundOutcome(Disposition.ACCEPTED, user_id, int(queued))
    return _rate_limited(conn, _statements(conn.dialect.name), message, user_id, rate_noticed_at, now)


@dataclass(frozen=True)
class _PgStatements:
    accept: Any  # store, upsert the user, queue the event: no rate limit
    store_and_lock_user: Any
    count_and_queue: Any


@cache
def _pg_statements() -> _PgStatements:
    inbound = INBOUND
    users = USERS
    now = bindparam("now", type_=UTCDateTime())
    sid = bindparam("message_sid", type_=String())
    uid = bindparam("user_id", type_=String())
    stored = (
        postgresql.insert(inbound)
        .values(
            message_sid=sid, user_id=uid, body_enc=bindparam("body_enc", type_=Text()),
            num_media=bindparam("num_media", type_=Integer()), disposition=Disposition.ACCEPTED.value,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["message_sid"])
        .returning(inbound.c.message_sid)
        .cte("stored")
    )
    upsert = postgresql.insert(users).from_select(
        ["id", "address_enc", "created_at", "last_inbound_at"],
        select(uid, bindparam("address_enc", type_=Text()), now, now).select_from(stored),
    )
    user = (
        upsert.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "last_inbound_at": case(
                    (users.c.last_inbound_at.is_(None), upsert.excluded.last_inbound_at),
                    (users.c.last_inbound_at < upsert.excluded.last_inbound_at, upsert.excluded.last_inbound_at),
                    else_=users.c.last_inbound_at,
                )
            },
        )
        .returning(users.c.rate_noticed_at)
        .cte("locked_user")
    )

    def queue_event(source: Any, *conditions: Any) -> Any:
        columns = select(
            bindparam("event_id", type_=String()), bindparam("event_type", type_=String()), sid, uid,
            bindparam("envelope", type_=Text()), now, literal(0, Integer()),
        ).select_from(source)
        return (
            OUTBOX.insert()
            .from_select(
                ["id", "event_type", "correlation_id", "user_id", "envelope", "created_at", "attempts"],
                columns.where(*conditions),
            )
            .returning(OUTBOX.c.id)
            .cte("queued")
        )

    def count(cte: Any) -> Any:
        return select(func.count()).select_from(cte).scalar_subquery()

    queued = queue_event(stored)
    recent = (
        select(func.count().label("n"))
        .select_from(inbound)
        .where(inbound.c.user_id == uid)
        .where(inbound.c.received_at > bindparam("since", type_=UTCDateTime()))
        .where(inbound.c.disposition == Disposition.ACCEPTED.value)
        .where(inbound.c.message_sid != sid)
        .cte("recent")
    )
    queued_under_limit = queue_event(recent, recent.c.n < bindparam("limit", type_=Integer()))
    return _PgStatements(
        accept=select(count(stored), select(user.c.rate_noticed_at).scalar_subquery(), count(queued)),
        store_and_lock_user=select(count(stored), select(user.c.rate_noticed_at).scalar_subquery()),
        count_and_queue=select(select(recent.c.n).scalar_subquery(), count(queued_under_limit)),
    )


def _rate_limited(
    conn: Connection,
    stmts: _Statements,
    message: InboundMessageIn,
    user_id: str,
    rate_noticed_at: datetime | None,
    now: datetime,
) -> InboundOutcome:
    conn.execute(stmts.mark_rate_limited, {"sid": message.message_sid})
    if rate_noticed_at is not None and now - rate_noticed_at < RATE_WINDOW:
        return InboundOutcome(Disposition.RATE_LIMITED, user_id, 0)
    conn.execute(stmts.note_rate_notice, {"user_id": user_id, "now": now})
    notice = ReplyReady(user_id=user_id, body=RATE_LIMIT_NOTICE, kind="notice")
    add_to_outbox(
        conn,
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
