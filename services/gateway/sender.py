"""Delivering a reply.ready: split, then send each chunk exactly once, in order.

Exactly once per chunk rests on the outbound_messages row of each (reply, chunk):
  * the rows are created once (unique (reply_id, chunk_index)); a redelivered or concurrent
    reply.ready loads them instead, so the split and the template decision never change;
  * a chunk is claimed with a conditional UPDATE (pending -> sending) before the provider is
    called, and marked with the provider's sid right after; a chunk already sent is skipped (its
    message.sent is re-published with the same id so consumers dedupe);
  * a claim older than the lease (a worker that died mid-send) may be taken over.

The unavoidable window: if the process dies after Twilio accepted a chunk but before the commit
that records its sid, the row stays 'sending'; once the lease expires the chunk is sent again.
Twilio's Messages API has no idempotency key, so this crash window (milliseconds wide) is the
one place a duplicate message remains possible; every other failure is retried or skipped.

The destination address is read from the users table (decrypted here), never from an event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from opentelemetry.trace import SpanKind
from sqlalchemy import Connection, bindparam, or_, select, update

from libs.common import bus, db, metrics, telemetry
from libs.common.events import (
    Envelope,
    EventType,
    MessageFailed,
    MessageSent,
    ReplyReady,
    Service,
    UserErased,
    derived_id,
)
from libs.common.security import decrypt, encrypt
from libs.common.settings import Settings, get_settings
from services.gateway.channels import (
    Accepted,
    Channel,
    OutgoingMessage,
    SendError,
    attempt_seconds,
    channel_for,
    send_with_retries,
)
from services.gateway.delivery_status import FAILURE_STATUSES, SENT_STATUSES, STATUS_RANK
from services.gateway.erasure import erase_user
from services.gateway.held_connection import HeldConnections
from services.gateway.splitting import WHATSAPP_LIMIT, split_message, truncate_words
from services.gateway.sql import OUTBOUND, USERS, dialect_insert

log = logging.getLogger(__name__)

SOURCE = Service.GATEWAY.value
# A claim is renewed before every attempt, so it only has to outlast one attempt (plus the renewal's own
# round trip): a worker that dies mid-send holds its chunk back for this long, no longer.
LEASE_MARGIN = timedelta(seconds=10)
# Twilio's error for a free-form message outside the 24-hour customer-service window.
OUTSIDE_WINDOW_CODE = "63016"
TEMPLATE_VARIABLE_LIMIT = 1000


class ChunkInFlight(TimeoutError):
    """Another worker holds a live claim on a chunk of this reply: retry later (a transient error)."""


@dataclass
class DeliveryReport:
    reply_id: str
    chunk_count: int = 0
    sent: int = 0  # sent by this call
    already_sent: int = 0  # found sent by an earlier delivery
    failed: bool = False
    error_code: str | None = None
    template: bool = False
    erased: bool = False
    provider_sids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Recipient:
    address: str
    last_inbound_at: datetime | None


@dataclass(frozen=True)
class _Chunk:
    id: int
    chunk_index: int
    chunk_count: int
    body: str
    template: bool
    status: str
    provider_sid: str | None
    channel: str
    error_code: str | None


def sending_lease(settings: Settings) -> timedelta:
    return timedelta(seconds=attempt_seconds()) + LEASE_MARGIN


@dataclass(frozen=True)
class _Statements:
    recipient: Any
    create_chunks: Any
    load_chunks: Any
    claim: Any
    renew: Any
    mark_sent: Any
    mark_failed: Any


@cache
def _statements(dialect: str) -> _Statements:
    """Built once per dialect and executed with parameters (building costs more than running)."""
    table = OUTBOUND
    users = USERS
    return _Statements(
        recipient=select(users.c.address_enc, users.c.last_inbound_at).where(users.c.id == bindparam("user_id")),
        create_chunks=dialect_insert(dialect, table)
        .on_conflict_do_nothing(index_elements=["reply_id", "chunk_index"])
        .returning(table.c.id, table.c.chunk_index),
        load_chunks=select(
            table.c.id, table.c.chunk_index, table.c.chunk_count, table.c.body_enc, table.c.template,
            table.c.status, table.c.provider_sid, table.c.channel, table.c.error_code,
        )
        .where(table.c.reply_id == bindparam("reply_id"))
        .order_by(table.c.chunk_index),
        claim=update(table)
        .where(table.c.id == bindparam("chunk_id"))
        .where(or_(
            table.c.status == "pending",
            (table.c.status == "sending") & (table.c.updated_at < bindparam("expired_before")),
        ))
        .values(status="sending", attempts=table.c.attempts + 1, updated_at=bindparam("now")),
        renew=update(table)
        .where(table.c.id == bindparam("chunk_id"))
        .where(table.c.status == "sending")
        .where(table.c.updated_at >= bindparam("expired_before"))
        .values(updated_at=bindparam("now")),
        mark_sent=update(table)
        .where(table.c.id == bindparam("chunk_id"))
        .where(table.c.status == "sending")
        .values(
            status=bindparam("new_status"), provider_sid=bindparam("sid"), sent_at=bindparam("now"),
            updated_at=bindparam("now"), error_code=None,
        ),
        mark_failed=update(table)
        .where(table.c.id.in_(bindparam("chunk_ids", expanding=True)))
        .where(table.c.status.in_(bindparam("allowed", expanding=True)))
        .values(status="failed", error_code=bindparam("code"), updated_at=bindparam("now")),
    )


_held: HeldConnections | None = None
_held_lock = threading.Lock()


def _held_connection() -> HeldConnections:
    """The worker's kept connections: a reply takes two or three short transactions, and a pool
    checkout would add a pre-ping round trip to each."""
    global _held
    with _held_lock:
        if _held is None:
            _held = HeldConnections(get_settings().database.pool_size)
        return _held


class _PartialChunks(Exception):
    """Some of a reply's chunk rows existed already: the stored set stands, never a mix of two plans."""


def _window_open(last_inbound_at: datetime | None, settings: Settings, now: datetime) -> bool:
    if last_inbound_at is None:
        return False
    return now - last_inbound_at <= timedelta(hours=settings.conversation.whatsapp_window_hours)


def _plan(reply: ReplyReady, template: bool) -> list[str]:
    if template:
        return [truncate_words(reply.body, TEMPLATE_VARIABLE_LIMIT)] if reply.body.strip() else []
    return split_message(reply.body, WHATSAPP_LIMIT)


@dataclass
class _Prepared:
    recipient: _Recipient | None
    chunks: list[_Chunk] = field(default_factory=list)
    outside_window: bool = False
    created: bool = False  # this call created the rows (and claimed the first chunk)


def _prepare(
    envelope: Envelope, reply: ReplyReady, channel: str, settings: Settings, now: datetime
) -> _Prepared:
    """The recipient and the reply's chunks, in one transaction: on a first delivery the rows are
    created with the first chunk already claimed; on a redelivery the stored ones are loaded."""
    held = _held_connection()
    try:
        return held.transaction(lambda conn: _prepare_in(conn, envelope, reply, channel, settings, now))
    except _PartialChunks:
        return held.transaction(lambda conn: _prepare_in(conn, envelope, reply, channel, settings, now, create=False))


def _prepare_in(
    conn: Connection, envelope: Envelope, reply: ReplyReady, channel: str, settings: Settings, now: datetime,
    create: bool = True,
) -> _Prepared:
    stmts = _statements(conn.dialect.name)
    row = conn.execute(stmts.recipient, {"user_id": reply.user_id}).first()
    if row is None:
        return _Prepared(recipient=None)
    recipient = _Recipient(address=decrypt(row.address_enc), last_inbound_at=row.last_inbound_at)
    # WhatsApp's 24-hour rule belongs to Twilio; the sandbox channel has no such window.
    outside_window = channel == "twilio" and not _window_open(recipient.last_inbound_at, settings, now)
    template = outside_window and bool(settings.twilio.template_content_sid)
    bodies = _plan(reply, template)
    if not bodies:
        return _Prepared(recipient, outside_window=outside_window)
    if create:
        # Free text outside the window would be refused (63016): such rows are born failed.
        doomed = outside_window and not template
        error_code = OUTSIDE_WINDOW_CODE if doomed else None
        statuses = ["failed" if doomed else ("sending" if index == 0 else "pending") for index in range(len(bodies))]
        rows = [
            {
                "reply_id": envelope.id,
                "correlation_id": envelope.correlation_id,
                "chunk_index": index,
                "chunk_count": len(bodies),
                "user_id": reply.user_id,
                "body_enc": encrypt(body),
                "channel": channel,
                "template": template,
                "status": statuses[index],
                "error_code": error_code,
                "attempts": 1 if statuses[index] == "sending" else 0,
                "created_at": now,
                "updated_at": now,
            }
            for index, body in enumerate(bodies)
        ]
        ids = {chunk_index: chunk_id for chunk_id, chunk_index in conn.execute(stmts.create_chunks, rows)}
        if len(ids) == len(bodies):
            chunks = [
                _Chunk(
                    id=ids[index], chunk_index=index, chunk_count=len(bodies), body=body, template=template,
                    status=statuses[index], provider_sid=None, channel=channel, error_code=error_code,
                )
                for index, body in enumerate(bodies)
            ]
            return _Prepared(recipient, chunks, outside_window, created=True)
        if ids:
            raise _PartialChunks()
    return _Prepared(recipient, _load_chunks(conn, stmts, envelope.id), outside_window)


def _load_chunks(conn: Connection, stmts: _Statements, reply_id: str) -> list[_Chunk]:
    return [
        _Chunk(
            id=row.id, chunk_index=row.chunk_index, chunk_count=row.chunk_count, body=decrypt(row.body_enc),
            template=bool(row.template), status=row.status, provider_sid=row.provider_sid, channel=row.channel,
            error_code=row.error_code,
        )
        for row in conn.execute(stmts.load_chunks, {"reply_id": reply_id})
    ]


def _claim(conn: Connection, stmts: _Statements, chunk_id: int, lease: timedelta, now: datetime) -> bool:
    result = conn.execute(stmts.claim, {"chunk_id": chunk_id, "expired_before": now - lease, "now": now})
    return int(getattr(result, "rowcount", 0) or 0) == 1


def _claim_alone(chunk_id: int, lease: timedelta) -> bool:
    return _held_connection().transaction(
        lambda conn: _claim(conn, _statements(conn.dialect.name), chunk_id, lease, db.utcnow())
    )


def _renew_claim(chunk_id: int, lease: timedelta) -> None:
    """Keep this worker's claim on ``chunk_id`` before another attempt; if the claim lapsed meanwhile,
    another worker may be sending the chunk now, so this one stops (the redelivery sorts it out)."""

    def renew(conn: Connection) -> int:
        now = db.utcnow()
        result = conn.execute(_statements(conn.dialect.name).renew,
                              {"chunk_id": chunk_id, "expired_before": now - lease, "now": now})
        return int(getattr(result, "rowcount", 0) or 0)

    if _held_connection().transaction(renew) != 1:
        raise ChunkInFlight(f"the claim on chunk {chunk_id} lapsed during the retries")


def _mark_sent(chunk_id: int, provider_sid: str, status: str, claim_next: int | None, lease: timedelta) -> bool:
    """Record the provider's sid for ``chunk_id`` and, in the same transaction, claim the chunk
    ``claim_next`` (if any); True when that next chunk is now this worker's to send."""
    if STATUS_RANK.get(status, -1) < STATUS_RANK["accepted"]:
        status = "queued"  # whatever Twilio calls it, the chunk has left our hands
    now = db.utcnow()

    def mark(conn: Connection) -> bool:
        stmts = _statements(conn.dialect.name)
        conn.execute(stmts.mark_sent, {"chunk_id": chunk_id, "new_status": status, "sid": provider_sid, "now": now})
        return claim_next is not None and _claim(conn, stmts, claim_next, lease, now)

    return _held_connection().transaction(mark)


def _mark_failed(chunk_ids: list[int], error_code: str | None, only_pending: bool = False) -> None:
    params = {
        "chunk_ids": chunk_ids,
        "allowed": ["pending"] if only_pending else ["pending", "sending"],
        "code": (error_code or "")[:16] or None,
        "now": db.utcnow(),
    }
    _held_connection().transaction(lambda conn: conn.execute(_statements(conn.dialect.name).mark_failed, params))


def _reload_chunks(reply_id: str) -> list[_Chunk]:
    return _held_connection().transaction(lambda conn: _load_chunks(conn, _statements(conn.dialect.name), reply_id))


def _publish_sent(envelope: Envelope, reply: ReplyReady, chunk: _Chunk, provider_sid: str) -> None:
    event = MessageSent(
        user_id=reply.user_id,
        chunk_index=chunk.chunk_index,
        chunk_count=chunk.chunk_count,
        provider_sid=provider_sid,
        channel="sandbox" if chunk.channel == "sandbox" else "twilio",
        template=chunk.template,
    )
    bus.publish(Envelope.new(
        event, envelope.correlation_id, source=SOURCE,
        event_id=derived_id(envelope.correlation_id, EventType.MESSAGE_SENT, f"{envelope.id}:{chunk.chunk_index}"),
    ))


def _publish_failed(envelope: Envelope, user_id: str | None, reason: str, error_code: str | None, key: str) -> None:
    # Stage "gateway": the processor must not apologise over the channel that just failed (it would loop).
    event = MessageFailed(user_id=user_id, stage=Service.GATEWAY.value, reason=reason, error_code=error_code)
    bus.publish(Envelope.new(
        event, envelope.correlation_id, source=SOURCE,
        event_id=derived_id(envelope.correlation_id, EventType.MESSAGE_FAILED, f"{envelope.id}:{key}"),
    ))


def _erase(envelope: Envelope, user_id: str) -> None:
    erased = erase_user(user_id)
    log.info("erased user %s (%d inbound, %d outbound rows)", user_id, erased.inbound, erased.outbound)
    bus.publish(Envelope.new(
        UserErased(user_id=user_id), envelope.correlation_id, source=SOURCE,
        event_id=derived_id(envelope.correlation_id, EventType.USER_ERASED),
    ))


def _send_chunk(channel: Channel, message: OutgoingMessage, chunk: _Chunk, settings: Settings,
                lease: timedelta) -> Accepted:
    """One chunk through the channel, retries included: a span of its own and the send metrics."""
    started = time.perf_counter()
    attributes = {"repotalk.channel": channel.name, "repotalk.chunk.index": chunk.chunk_index,
                  "repotalk.chunk.count": chunk.chunk_count, "repotalk.chunk.chars": len(chunk.body),
                  "repotalk.template": chunk.template}
    # The send is this span (retries are its events): the HTTP client span beneath it would record the same call.
    with telemetry.span("twilio.send_chunk", SpanKind.CLIENT, attributes) as current, telemetry.suppressed():
        try:
            accepted = send_with_retries(
                channel, message, settings.twilio.send_max_attempts, settings.twilio.send_backoff_base,
                before_retry=lambda: _renew_claim(chunk.id, lease),
            )
        except SendError as exc:
            metrics.TWILIO_SENDS.labels(channel.name, "failed").inc()
            telemetry.set_attributes(current, outcome="failed", error_code=exc.error_code)
            telemetry.mark_error(current, f"refused: code {exc.error_code}")
            raise
        telemetry.set_attributes(current, outcome="sent", provider_sid=accepted.provider_sid)
        metrics.TWILIO_SENDS.labels(channel.name, "sent").inc()
        metrics.observe(metrics.TWILIO_SEND_LATENCY, time.perf_counter() - started)
    return accepted


def _observe_delivery(reply: ReplyReady, recipient: _Recipient, report: DeliveryReport) -> None:
    """A reply delivered in full by this call counts as answered; its turn's latency runs from the user's
    last inbound message (the one this reply answers) to now."""
    if not report.sent or report.failed:
        return
    metrics.MESSAGES_ANSWERED.labels(reply.kind).inc()
    if not report.already_sent and recipient.last_inbound_at is not None:
        turn = (db.utcnow() - recipient.last_inbound_at).total_seconds()
        metrics.observe(metrics.TURN_LATENCY.labels(reply.kind), max(0.0, turn))


def deliver_reply(envelope: Envelope, channel: Channel | None = None) -> DeliveryReport:
    """Send the reply carried by a reply.ready envelope; safe to call again for the same envelope."""
    reply = envelope.data()
    if not isinstance(reply, ReplyReady):
        raise TypeError(f"expected reply.ready, got {envelope.type.value}")
    settings = get_settings()
    report = DeliveryReport(reply_id=envelope.id)
    channel = channel or channel_for(settings)

    prepared = _prepare(envelope, reply, channel.name, settings, db.utcnow())
    recipient = prepared.recipient
    if recipient is None:
        if reply.erase_user_after:
            # Already erased by an earlier delivery of this very reply: only the announcement may be missing.
            bus.publish(Envelope.new(
                UserErased(user_id=reply.user_id), envelope.correlation_id, source=SOURCE,
                event_id=derived_id(envelope.correlation_id, EventType.USER_ERASED),
            ))
            report.erased = True
            return report
        log.warning("reply %s for unknown user %s: no address on file", envelope.id, reply.user_id)
        _publish_failed(envelope, reply.user_id, "no address on file for this user", None, "unknown-user")
        report.failed = True
        return report

    chunks = prepared.chunks
    report.chunk_count = len(chunks)
    report.template = any(chunk.template for chunk in chunks)
    if prepared.outside_window and not report.template and any(c.status == "pending" for c in chunks):
        # Rows stored by an earlier delivery, inside the window then: free text would now be
        # refused (63016) and no approved template is configured.
        _mark_failed([c.id for c in chunks], OUTSIDE_WINDOW_CODE, only_pending=True)
        chunks = _reload_chunks(envelope.id)

    lease = sending_lease(settings)
    claimed = prepared.created  # a new reply's first chunk was claimed with its rows
    for position, chunk in enumerate(chunks):
        if chunk.status in SENT_STATUSES:
            _publish_sent(envelope, reply, chunk, chunk.provider_sid or "")
            report.already_sent += 1
            report.provider_sids.append(chunk.provider_sid or "")
            claimed = False
            continue
        if chunk.status in FAILURE_STATUSES:
            report.failed, report.error_code = True, chunk.error_code
            reason = ("outside the 24-hour WhatsApp window and no template configured"
                      if chunk.error_code == OUTSIDE_WINDOW_CODE else "send failed")
            _publish_failed(envelope, reply.user_id, reason, chunk.error_code, str(chunk.chunk_index))
            break
        if not claimed and not _claim_alone(chunk.id, lease):
            raise ChunkInFlight(f"chunk {chunk.chunk_index} of reply {envelope.id} is being sent by another worker")
        message = (
            OutgoingMessage(
                to=recipient.address,
                content_sid=settings.twilio.template_content_sid,
                content_variables=json.dumps({"1": chunk.body}),
            )
            if chunk.template
            else OutgoingMessage(to=recipient.address, body=chunk.body)
        )
        try:
            accepted = _send_chunk(channel, message, chunk, settings, lease)
        except SendError as exc:
            _mark_failed([chunk.id], exc.error_code)
            log.warning("chunk %d/%d of %s refused: code %s", chunk.chunk_index + 1, chunk.chunk_count,
                        envelope.correlation_id, exc.error_code)
            _publish_failed(envelope, reply.user_id, exc.reason, exc.error_code, str(chunk.chunk_index))
            report.failed, report.error_code = True, exc.error_code
            break
        following = chunks[position + 1] if position + 1 < len(chunks) else None
        claim_next = following.id if following is not None and following.status == "pending" else None
        claimed = _mark_sent(chunk.id, accepted.provider_sid, accepted.status, claim_next, lease)
        _publish_sent(envelope, reply, chunk, accepted.provider_sid)
        report.sent += 1
        report.provider_sids.append(accepted.provider_sid)

    log.info("reply %s for %s: %d chunk(s), %d sent now, %d earlier%s", envelope.id, envelope.correlation_id,
             report.chunk_count, report.sent, report.already_sent, ", failed" if report.failed else "")
    _observe_delivery(reply, recipient, report)
    if reply.erase_user_after:
        # The user asked to be forgotten: erase once the confirmation went out (or definitively could not).
        _erase(envelope, reply.user_id)
        report.erased = True
    return report
