"""What message.received needs to know, read in one statement: whether its MessageSid was handled
before (a turn exists, or the receipt of the erasure it confirmed), the user's active session, and
that session's latest answered exchanges (the conversation history, still encrypted).

One round trip instead of four; it decides the common case (a question in an active session) alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Select, String, and_, bindparam, literal_column, or_, select

from libs.common.events import HistoryItem
from libs.common.security import decrypt
from services.processor.sessions import CHAT_COLUMNS, EXCHANGE_KINDS, Chat, chat_from_row
from services.processor.tables import ERASURES, SESSIONS, TURNS
from services.processor.turns import ANSWERED


@dataclass(frozen=True)
class Lookup:
    seen: bool  # a turn exists for this MessageSid: a redelivery
    erased: bool  # this MessageSid confirmed an erasure that is done: a redelivery
    session: Chat | None  # the user's active session
    # The session's latest answered exchanges, newest first: (question_enc, answer_enc).
    exchanges: list[tuple[str, str | None]] = field(default_factory=list)

    def history(self) -> list[HistoryItem]:
        """The exchanges as the answerer's history, oldest first (decrypted only when asked for)."""
        items: list[HistoryItem] = []
        for question_enc, answer_enc in reversed(self.exchanges):
            items.append(HistoryItem(role="user", text=decrypt(question_enc)))
            items.append(HistoryItem(role="assistant", text=decrypt(answer_enc) if answer_enc else ""))
        return items


@lru_cache(maxsize=8)
def _statement(history_turns: int) -> Select[Any]:
    cid = bindparam("cid", type_=String)
    seen = select(TURNS.c.correlation_id).where(TURNS.c.correlation_id == cid).exists()
    erased = select(ERASURES.c.correlation_id).where(ERASURES.c.correlation_id == cid).exists()
    past = TURNS.alias("past")
    # One row even when the user has no session: everything hangs off a one-row relation.
    anchor = select(literal_column("1").label("one")).subquery("anchor")
    joined = anchor.outerjoin(
        SESSIONS, and_(SESSIONS.c.user_id == bindparam("uid"), SESSIONS.c.ended_at.is_(None))
    ).outerjoin(
        past,
        and_(
            past.c.session_id == SESSIONS.c.id,
            past.c.status == ANSWERED,
            or_(*(past.c.kind == kind for kind in EXCHANGE_KINDS)),
        ),
    )
    return (
        select(seen.label("seen"), erased.label("erased"), *CHAT_COLUMNS, past.c.question_enc, past.c.answer_enc)
        .select_from(joined)
        .order_by(past.c.created_at.desc(), past.c.correlation_id.desc())
        .limit(max(history_turns, 1))
    )


def load(conn: Connection, correlation_id: str, user_id: str, history_turns: int) -> Lookup:
    """Everything message.received decides on; ``history_turns`` exchanges at most (0: none)."""
    rows = conn.execute(_statement(history_turns), {"cid": correlation_id, "uid": user_id}).all()
    first = rows[0]
    chat = chat_from_row(first[2:9]) if first[2] is not None else None
    exchanges = [(row[9], row[10]) for row in rows if row[9] is not None] if history_turns > 0 else []
    return Lookup(seen=bool(first[0]), erased=bool(first[1]), session=chat, exchanges=exchanges)
