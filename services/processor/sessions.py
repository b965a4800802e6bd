"""Chat sessions: one active session per user, ended when idle or on /reset, carrying the repository
scope, the pending confirmation and (through its turns) the conversation history.

An inbound message first *plans* which session it belongs to from what was read (``plan``, no I/O),
then writes that plan in as few statements as possible (``apply``): usually one UPDATE that touches
the session and clears a cancelled confirmation.

Concurrency: the database holds at most one active session per user (a partial unique index), and a
session is only ended or touched by a conditional UPDATE. A transaction that loses either race raises
``Conflict`` or a unique violation; the caller retries the whole transaction (see ``tx.retrying``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, bindparam, insert, select, update

from libs.common.db import utcnow
from libs.common.settings import get_settings
from services.processor.tables import SESSIONS

# Exchanges that make up the conversation history (commands and notices are not part of it).
EXCHANGE_KINDS = ("question", "pattern")


class Conflict(Exception):
    """Another transaction changed the same session first; retry the whole transaction."""


@dataclass(frozen=True)
class Chat:
    """A session as read (or as it is about to be written)."""

    id: str
    user_id: str
    repos: list[str]
    created_at: datetime
    last_activity_at: datetime
    pending_action: str | None = None
    pending_until: datetime | None = None


# The columns of a Chat, in field order (a row of them builds one).
CHAT_COLUMNS = (
    SESSIONS.c.id,
    SESSIONS.c.user_id,
    SESSIONS.c.repos,
    SESSIONS.c.created_at,
    SESSIONS.c.last_activity_at,
    SESSIONS.c.pending_action,
    SESSIONS.c.pending_until,
)


def chat_from_row(row: Sequence[Any]) -> Chat:
    return Chat(row[0], row[1], list(row[2] or []), row[3], row[4], row[5], row[6])


_ACTIVE = select(*CHAT_COLUMNS).where(SESSIONS.c.user_id == bindparam("uid"), SESSIONS.c.ended_at.is_(None))
INSERT = insert(SESSIONS)
# Each statement on one session names its user too. The driver prepares statements, and Postgres keeps the
# generic plan it made when the table was young and unanalyzed: for "id = ? AND ended_at IS NULL" that plan
# was a walk through every active session (the partial index holds exactly those), until autovacuum's next
# ANALYZE. With the user's id, the active-session index finds the row at once whatever the statistics say.
_ONE = (SESSIONS.c.id == bindparam("sid"), SESSIONS.c.user_id == bindparam("uid"))
_END = (
    update(SESSIONS)
    .where(*_ONE, SESSIONS.c.ended_at.is_(None))
    .values(ended_at=bindparam("at", type_=SESSIONS.c.ended_at.type), end_reason=bindparam("reason"))
)
TOUCH = (
    update(SESSIONS)
    .where(*_ONE, SESSIONS.c.ended_at.is_(None))
    .values(last_activity_at=bindparam("at", type_=SESSIONS.c.last_activity_at.type))
)
# Touch and drop a confirmation that this message cancelled, in one statement.
TOUCH_CLEAR = TOUCH.values(pending_action=None, pending_until=None)
_SET_PENDING = (
    update(SESSIONS)
    .where(*_ONE)
    .values(
        pending_action=bindparam("action"),
        pending_until=bindparam("until", type_=SESSIONS.c.pending_until.type),
    )
)
_SET_REPOS = update(SESSIONS).where(*_ONE).values(repos=bindparam("scope", type_=SESSIONS.c.repos.type))


def idle_limit() -> timedelta:
    return timedelta(minutes=get_settings().conversation.session_idle_minutes)


def active_session(conn: Connection, user_id: str) -> Chat | None:
    row = conn.execute(_ACTIVE, {"uid": user_id}).first()
    return chat_from_row(row) if row is not None else None


def end_session(conn: Connection, chat: Chat, reason: str, now: datetime) -> None:
    """End an active session; raises Conflict when another transaction ended it first."""
    result = conn.execute(_END, {"sid": chat.id, "uid": chat.user_id, "at": now, "reason": reason})
    if result.rowcount != 1:
        raise Conflict(f"session {chat.id} was ended concurrently")


def new_chat(
    user_id: str,
    now: datetime,
    repos: Sequence[str] = (),
    pending_action: str | None = None,
    pending_until: datetime | None = None,
) -> Chat:
    return Chat(
        id=uuid.uuid4().hex,
        user_id=user_id,
        repos=list(repos),
        created_at=now,
        last_activity_at=now,
        pending_action=pending_action,
        pending_until=pending_until,
    )


def session_row(chat: Chat) -> dict[str, Any]:
    """The row of a session about to start (the parameters of ``INSERT``)."""
    return {
        "id": chat.id,
        "user_id": chat.user_id,
        "repos": chat.repos,
        "created_at": chat.created_at,
        "last_activity_at": chat.last_activity_at,
        "ended_at": None,
        "end_reason": None,
        "pending_action": chat.pending_action,
        "pending_until": chat.pending_until,
    }


def insert_session(conn: Connection, chat: Chat) -> None:
    # A concurrent insert for the same user surfaces here as a unique violation.
    conn.execute(INSERT, session_row(chat))


def start_session(
    conn: Connection,
    user_id: str,
    now: datetime,
    repos: Sequence[str] = (),
    pending_action: str | None = None,
    pending_until: datetime | None = None,
) -> Chat:
    chat = new_chat(user_id, now, repos, pending_action, pending_until)
    insert_session(conn, chat)
    return chat


@dataclass(frozen=True)
class Plan:
    """Which session a message belongs to and how to get there.

    continue: ``found`` is still active; expire: ``found`` went idle and ``chat`` succeeds it;
    start: the user had no active session.
    """

    how: Literal["continue", "expire", "start"]
    chat: Chat
    found: Chat | None

    @property
    def continues(self) -> bool:
        """Whether the message joins the session that was read (and so its history)."""
        return self.how == "continue"

    def without_pending(self) -> Plan:
        return replace(self, chat=replace(self.chat, pending_action=None, pending_until=None))


def plan(found: Chat | None, user_id: str, now: datetime) -> Plan:
    """The user's active session, touched; a new one when there is none or the last one went idle.

    An expired session ends with end_reason='expired'; its successor keeps the repository scope (a
    preference, not conversation) and a still-valid pending confirmation, but none of its history.
    """
    if found is None:
        return Plan("start", new_chat(user_id, now), None)
    if now - found.last_activity_at > idle_limit():
        pending_valid = found.pending_until is not None and found.pending_until > now
        successor = new_chat(
            user_id,
            now,
            repos=found.repos,
            pending_action=found.pending_action if pending_valid else None,
            pending_until=found.pending_until if pending_valid else None,
        )
        return Plan("expire", successor, found)
    return Plan("continue", replace(found, last_activity_at=now), found)


def apply(conn: Connection, chosen: Plan, now: datetime) -> Chat:
    """Write a plan: one UPDATE to continue a session, or end the idle one and insert its successor,
    or insert the user's first. Raises Conflict (or a unique violation) when another transaction got
    there first."""
    if chosen.how == "continue":
        assert chosen.found is not None
        clear = chosen.found.pending_action is not None and chosen.chat.pending_action is None
        result = conn.execute(TOUCH_CLEAR if clear else TOUCH,
                              {"sid": chosen.chat.id, "uid": chosen.chat.user_id, "at": now})
        if result.rowcount != 1:
            raise Conflict(f"session {chosen.chat.id} was ended concurrently")
        return chosen.chat
    if chosen.how == "expire":
        assert chosen.found is not None
        end_session(conn, chosen.found, "expired", now)
    insert_session(conn, chosen.chat)
    return chosen.chat


def reset_session(conn: Connection, chat: Chat, now: datetime | None = None) -> Chat:
    """/reset: end the session and start an empty one (no history, every repository in scope)."""
    now = now or utcnow()
    end_session(conn, chat, "reset", now)
    return start_session(conn, chat.user_id, now)


def touch(conn: Connection, session_id: str | None, user_id: str, now: datetime | None = None) -> bool:
    """Move an active session's last activity to now; False when it is no longer active."""
    if session_id is None:
        return False
    return conn.execute(TOUCH, {"sid": session_id, "uid": user_id, "at": now or utcnow()}).rowcount == 1


def set_pending(conn: Connection, chat: Chat, action: str, until: datetime) -> Chat:
    conn.execute(_SET_PENDING, {"sid": chat.id, "uid": chat.user_id, "action": action, "until": until})
    return replace(chat, pending_action=action, pending_until=until)


def set_repos(conn: Connection, chat: Chat, repos: Sequence[str]) -> Chat:
    conn.execute(_SET_REPOS, {"sid": chat.id, "uid": chat.user_id, "scope": list(repos)})
    return replace(chat, repos=list(repos))


def pending(chat: Chat, action: str, now: datetime) -> bool:
    """Whether ``action`` waits for confirmation and its window is still open."""
    return chat.pending_action == action and chat.pending_until is not None and now <= chat.pending_until
