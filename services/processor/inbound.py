"""message.received: route an inbound message to a notice, a command, the /delete confirmation or a
question, and persist it as a Turn keyed by its MessageSid.

Idempotent: a message seen before (its Turn, or the receipt of the erasure it confirmed, exists) is
not handled again; what it published is re-published with the same event id.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection

from libs.common.db import utcnow
from libs.common.events import Envelope, HistoryItem, MessageReceived, ReplyKind, SearchMode, SearchRequested
from libs.common.settings import get_settings
from services.processor import commands, intent, lookup, outgoing, privacy, sessions, texts, turns, tx, writes

log = logging.getLogger(__name__)


SMALL_TALK = {
    intent.Intent.GREETING: texts.GREETING,
    intent.Intent.THANKS: texts.THANKS,
    intent.Intent.ABOUT_ME: texts.ABOUT_ME,
    intent.Intent.OFF_TOPIC: texts.OFF_TOPIC,
}


def is_confirmation(text: str) -> bool:
    """'yes  delete.' counts: phones capitalise, punctuate and double spaces."""
    return " ".join(text.split()).upper().rstrip(".!") == texts.CONFIRM_DELETE_PHRASE


def handle(envelope: Envelope) -> list[Envelope]:
    """Handle one message.received; returns the events to publish (after the transaction committed)."""
    message = envelope.data()
    if not isinstance(message, MessageReceived):
        raise TypeError(f"expected message.received, got {envelope.type}")
    correlation_id = envelope.correlation_id
    return tx.retrying(lambda conn: _handle(conn, correlation_id, message), "message.received", correlation_id)


def _handle(conn: Connection, correlation_id: str, message: MessageReceived) -> list[Envelope]:
    user_id = message.user_id
    settings = get_settings()
    # One read decides the usual message (a question); its writes are then one statement on Postgres.
    found = lookup.load(conn, correlation_id, user_id, settings.conversation.history_turns)
    if found.seen:
        seen = turns.get(conn, correlation_id)
        if seen is not None:
            log.info("message %s seen before (turn %s, %s): re-publishing", correlation_id, seen.kind, seen.status)
            return replay(seen)
    if found.erased:
        erased = privacy.receipt(conn, correlation_id)
        if erased is not None:
            log.info("message %s confirmed an erasure already done: re-publishing", correlation_id)
            return [_erased_reply(correlation_id, user_id, privacy.erased_reply(erased))]

    now = utcnow()
    text = message.body.strip()
    plan = sessions.plan(found.session, user_id, now)
    confirming = sessions.pending(plan.chat, privacy.DELETE_ACTION, now) and is_confirmation(text)
    if not confirming and plan.chat.pending_action is not None:
        # Any other message (or a confirmation after the window) cancels what was waiting.
        log.info("user %s: pending %s cancelled by %s", user_id, plan.chat.pending_action, correlation_id)
        plan = plan.without_pending()

    limit = settings.conversation.max_body_chars
    small_talk = intent.classify(text) if text and not text.startswith("/") else intent.Intent.QUESTION
    if small_talk is not intent.Intent.QUESTION and not confirming:
        with tx.atomic(conn):
            chat = sessions.apply(conn, plan, now)
            return _notice(conn, correlation_id, chat, user_id, SMALL_TALK[small_talk], small_talk.value)
    if text and len(text) <= limit and not is_confirmation(text) and not text.startswith("/"):
        # A question: the session's write goes with the turn's (one statement where the database can).
        # The history belongs to the session that was read; a session started now has none.
        history = found.history() if plan.continues else []
        return _search(
            conn, correlation_id, plan.chat, user_id, text, query=text, mode="question", now=now, history=history,
            plan=plan,
        )

    with tx.atomic(conn):
        return _settle(conn, correlation_id, message, plan, text, confirming, now)


def _settle(
    conn: Connection,
    correlation_id: str,
    message: MessageReceived,
    plan: sessions.Plan,
    text: str,
    confirming: bool,
    now: datetime,
) -> list[Envelope]:
    """Everything but a question: the session's write, then a notice, a command or the erasure."""
    user_id = message.user_id
    chat = sessions.apply(conn, plan, now)
    if confirming:
        receipt = privacy.erase(conn, user_id, correlation_id, now)
        log.info(
            "erased user %s on %s: %d sessions, %d turns", user_id, correlation_id, receipt.sessions, receipt.turns
        )
        return [_erased_reply(correlation_id, user_id, privacy.erased_reply(receipt))]
    if not text:
        notice = texts.MEDIA_ONLY if message.num_media > 0 else texts.EMPTY_MESSAGE
        return _notice(conn, correlation_id, chat, user_id, notice, "empty" if not message.num_media else "media")
    limit = get_settings().conversation.max_body_chars
    if len(text) > limit:
        return _notice(conn, correlation_id, chat, user_id, texts.too_long(len(text), limit), "too long")
    if is_confirmation(text):
        return _notice(conn, correlation_id, chat, user_id, texts.NOTHING_TO_CONFIRM, "nothing to confirm")
    return _command(conn, correlation_id, chat, user_id, text, now)


def _notice(
    conn: Connection, correlation_id: str, chat: sessions.Chat, user_id: str, body: str, why: str
) -> list[Envelope]:
    # What was sent is not kept: it was not processed (and an oversized body is not ours to hold).
    turns.add_replied(conn, correlation_id, chat.id, user_id, "notice", "", body)
    log.info("message %s from %s: notice (%s)", correlation_id, user_id, why)
    return [outgoing.reply(correlation_id, user_id, body, "notice")]


def _command(
    conn: Connection, correlation_id: str, chat: sessions.Chat, user_id: str, text: str, now: datetime
) -> list[Envelope]:
    command = commands.parse(text)
    session_id = chat.id  # /reset ends this session; the command itself belongs to it
    result = commands.run(command, commands.Context(conn=conn, chat=chat, user_id=user_id, now=now))
    name = command.name if commands.known(command.name) else "unknown"
    if result.search_pattern is not None:
        log.info("message %s from %s: /search (%d chars)", correlation_id, user_id, len(result.search_pattern))
        # A pattern search is literal: earlier questions would not change what matches.
        return _search(conn, correlation_id, chat, user_id, text, query=result.search_pattern, mode="pattern", now=now)
    body = result.reply or ""
    turns.add_replied(conn, correlation_id, session_id, user_id, "command", text, body)
    log.info("message %s from %s: /%s (reply %d chars)", correlation_id, user_id, name, len(body))
    return [outgoing.reply(correlation_id, user_id, body, "command")]


def _search(
    conn: Connection,
    correlation_id: str,
    chat: sessions.Chat,
    user_id: str,
    text: str,
    query: str,
    mode: SearchMode,
    now: datetime,
    history: list[HistoryItem] | None = None,
    plan: sessions.Plan | None = None,
) -> list[Envelope]:
    """Persist the turn and publish its search. With a ``plan``, the session is written together with
    the turn (``chat`` is the plan's); without, it was written already."""
    request = SearchRequested(
        session_id=chat.id,
        user_id=user_id,
        query=query,
        mode=mode,
        repos=list(chat.repos),
        limit=get_settings().search.result_limit,
        history=history or [],
    )
    row = turns.search_row(correlation_id, chat.id, user_id, text, request, now)
    if plan is not None:
        writes.join_and_insert(conn, plan, now, row)
    else:
        turns.add(conn, row)
    log.info(
        "message %s from %s: %s (%d chars, %d repos in scope, %d history items)",
        correlation_id, user_id, mode, len(query), len(request.repos), len(request.history),
    )
    return [outgoing.search(correlation_id, request)]


def _erased_reply(correlation_id: str, user_id: str, body: str) -> Envelope:
    return outgoing.reply(correlation_id, user_id, body, "command", erase_user_after=True)


def replay(turn: turns.StoredTurn) -> list[Envelope]:
    """What handling this turn's message published, again (same ids, same payloads)."""
    if turn.kind in ("command", "notice"):
        kind: ReplyKind = "command" if turn.kind == "command" else "notice"
        return [outgoing.reply(turn.correlation_id, turn.user_id, turns.answer_text(turn) or "", kind)]
    if turn.status in turns.OPEN:
        request = turns.search_request(turn)
        if request is not None:
            return [outgoing.search(turn.correlation_id, request)]
    if turn.status == turns.ANSWERED:
        # The reply.ready the answer published, again: it can be lost on its way to the gateway (a worker killed
        # just as it took the task off the queue, before the broker counted it as taken). The gateway re-drives
        # a turn without a reply through here, and its sender sends each chunk once, so a reply already sent is
        # not sent again.
        body = turns.answer_text(turn) or texts.EMPTY_ANSWER
        return [outgoing.reply(turn.correlation_id, turn.user_id, body, "answer")]
    if turn.status == turns.FAILED:
        # The apology the message.failed handler published, again (the same event: the turn's one reply id). It can
        # be lost on its way to the gateway as an answer's can, and is re-driven the same way. It cannot loop: the
        # gateway re-drives only a turn with no reply rows, and its sender sends each chunk once; a chunk whose
        # send failed is reported (stage gateway, for which nobody apologises), not sent again.
        return [outgoing.apology(turn.correlation_id, turn.user_id)]
    return []
