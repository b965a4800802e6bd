"""Recording events: a batch of them (or one) in one short transaction, idempotent, order-independent.

Three statements per batch on Postgres, whatever its size:
1. claim the new events by id in ``analytics_events`` (INSERT .. ON CONFLICT DO NOTHING RETURNING): a
   duplicate, within the batch or of an event recorded before, stops there;
2. create-or-lock the rows of the turns the new events touch and read them back (INSERT .. ON CONFLICT
   DO UPDATE RETURNING: the no-op update takes the row lock), with which of the events' users were erased;
3. after the new events have been replayed in batch order on those rows in memory (merge.Replay: the
   same rules as one event at a time), write the changed rows back and add the searches.
(Plus one statement per user erased, which is rare.) The rows travel as one JSON document per
statement, expanded by json_populate_recordset(): the statement texts stay the same whatever the
batch size, so Postgres parses and plans each once per connection. SQLite runs the same steps as
multi-row statements, one table at a time.

Concurrency on Postgres (two workers, or two threads of one, recording batches that touch the same
turns): events and turns are claimed and locked in key order, so the second batch waits for the first
instead of deadlocking and merges into what it committed. Linking a user to a turn and erasing a user
exclude each other through a transaction-level advisory lock that step 1 takes (shared by every batch,
exclusive for a batch that erases) and that step 2's look-up of erased users follows: otherwise a batch
could link a user whose erasure commits meanwhile, after the erasure's UPDATE had passed over that turn.
SQLite has one writer at a time: nothing to do there.

Step 1 also turns synchronous commit off for the transaction on Postgres, except in a batch that erases
a user (see _Postgres).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic_core import to_json
from sqlalchemy import (
    Connection,
    DateTime,
    Table,
    Text,
    bindparam,
    cast,
    func,
    literal_column,
    null,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from libs.common import db
from libs.common.events import Envelope, EventType, Payload
from libs.common.models.analytics import AnalyticsEvent, ErasedUser, SearchQuery, TurnMetrics
from services.analytics.merge import (
    APPLY,
    COLUMNS,
    MERGED,
    SEARCH_COLUMNS,
    STATUSES,
    Replay,
    TurnState,
    affects_turn,
    decode,
    from_row,
    merged_values_of,
    turn_user,
    user_hash,
    values_of,
)

__all__ = ["APPLY", "STATUSES", "record", "record_batch"]

log = logging.getLogger(__name__)

EVENTS: Table = AnalyticsEvent.__table__  # type: ignore[assignment]
TURNS: Table = TurnMetrics.__table__  # type: ignore[assignment]
SEARCHES: Table = SearchQuery.__table__  # type: ignore[assignment]
ERASED: Table = ErasedUser.__table__  # type: ignore[assignment]
CLAIM_COLUMNS = ("event_id", "type", "correlation_id", "source", "occurred_at", "received_at")
NEW_TURN_COLUMNS = ("correlation_id", "started_at")
# The advisory lock that orders linking users to turns against erasing users ("analytic" in ASCII).
ERASURE_LOCK = 0x616E616C79746963

Rows = Sequence[Sequence[Any]]


class _Store:
    """The statements of one backend, built once (SQLAlchemy then reuses their compiled form)."""

    def __init__(self, insert: Any) -> None:
        self.mark_erased = insert(ERASED).on_conflict_do_nothing(index_elements=["user_hash"])
        self.anonymise = update(TURNS).where(TURNS.c.user_id == bindparam("erased_user")).values(user_id=None)
        self.expire_turns = (
            update(TURNS)
            .where(TURNS.c.started_at < bindparam("cutoff"), TURNS.c.user_id.is_not(None))
            .values(user_id=None)
        )

    def claim(self, connection: Connection, rows: Rows, erasing: bool) -> set[str]:
        raise NotImplementedError

    def lock_turns(
        self, connection: Connection, rows: Rows, hashes: list[str]
    ) -> tuple[dict[str, TurnState], set[str]]:
        """The turns' rows, locked, and which of the user hashes are erased."""
        raise NotImplementedError

    def write(self, connection: Connection, turns: Rows, searches: Rows) -> None:
        raise NotImplementedError

    def expire(self, connection: Connection, cutoff: Any) -> None:
        """The retention job: turns started before ``cutoff`` keep their counts and timings, not their user."""
        result = connection.execute(self.expire_turns, {"cutoff": cutoff})
        log.info("retention: anonymised %d analytics turn(s) older than %s", int(result.rowcount or 0), cutoff)

    def erase(self, connection: Connection, user_id: str) -> None:
        """Forget which stored turns were the user's (the anonymous counts stay)."""
        connection.execute(self.mark_erased, {"user_hash": user_hash(user_id), "erased_at": db.utcnow()})
        result = connection.execute(self.anonymise, {"erased_user": user_id})
        log.info("anonymised %d stored analytics turn(s) of an erased user", int(result.rowcount or 0))


def _lock_new_turns(insert: Any) -> Any:
    # Setting a column to itself changes nothing but locks an existing row and returns it as committed.
    return insert.on_conflict_do_update(index_elements=["correlation_id"], set_={"status": TURNS.c.status}).returning(
        *(TURNS.c[name] for name in MERGED)
    )


def _write_turns(insert: Any) -> Any:
    return insert.on_conflict_do_update(
        index_elements=["correlation_id"], set_={name: insert.excluded[name] for name in COLUMNS[1:]}
    )


def _as_returned(column: Any) -> Any:
    """The column without UTCDateTime's conversion of each value read: psycopg already returns aware
    datetimes (in the session's time zone), and the merge only compares them and writes them back."""
    if isinstance(column.type, db.UTCDateTime):
        return type_coerce(column, DateTime(timezone=True))
    return column


class _Postgres(_Store):
    def __init__(self) -> None:
        super().__init__(postgresql.insert)

        def claim(*setup: Any) -> Any:
            # An uncorrelated subquery: evaluated once, before the first row is inserted.
            holding = select(func.count()).select_from(select(*setup).subquery()).scalar_subquery() > 0
            return (
                postgresql.insert(EVENTS)
                .from_select(CLAIM_COLUMNS, self._rows(EVENTS, CLAIM_COLUMNS).where(holding))
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(EVENTS.c.event_id)
            )

        # Analytics may lose the last moments of its bookkeeping if Postgres itself crashes (as it may lose
        # a batch if a publishing process is killed): it does not wait for the WAL to reach the disk, which
        # costs both sides of the connection more than the rest of a batch. Erasures are kept durable.
        self.claim_shared = claim(
            func.pg_advisory_xact_lock_shared(ERASURE_LOCK), func.set_config("synchronous_commit", "off", True)
        )
        self.claim_exclusive = claim(func.pg_advisory_xact_lock(ERASURE_LOCK))
        locked = _lock_new_turns(
            postgresql.insert(TURNS).from_select(NEW_TURN_COLUMNS, self._rows(TURNS, NEW_TURN_COLUMNS))
        ).cte("locked")
        self.lock = union_all(
            select(*(_as_returned(locked.c[name]) for name in MERGED), null().label("erased")),
            select(*(null() for _ in MERGED), ERASED.c.user_hash).where(
                # A JSON array too: a text parameter costs less to send than an array of them.
                ERASED.c.user_hash.in_(
                    select(func.json_array_elements_text(cast(bindparam("hashes", type_=Text), postgresql.JSON)))
                )
            ),
        )
        added = postgresql.insert(SEARCHES).from_select(SEARCH_COLUMNS, self._rows(SEARCHES, SEARCH_COLUMNS))
        self.write_all = _write_turns(
            postgresql.insert(TURNS).from_select(COLUMNS, self._rows(TURNS, COLUMNS))
        ).add_cte(added.cte("added_searches"))

    @staticmethod
    def _rows(table: Table, names: Sequence[str]) -> Any:
        """Rows of ``table`` read from a JSON array of objects (the parameter named after the table)."""
        document = cast(bindparam(table.name, type_=Text), postgresql.JSON)
        rows = func.json_populate_recordset(literal_column(f"NULL::{table.name}"), document).table_valued(
            *names, name="batch"
        )
        return select(*(rows.c[name] for name in names))

    @staticmethod
    def _json(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
        # Aware datetimes become ISO 8601 with their offset; a NaN float the string "NaN", which float8's
        # input function reads back (JSON itself has no NaN).
        return to_json([dict(zip(names, row, strict=True)) for row in rows], inf_nan_mode="strings").decode()

    def claim(self, connection: Connection, rows: Rows, erasing: bool) -> set[str]:
        statement = self.claim_exclusive if erasing else self.claim_shared
        return set(connection.execute(statement, {EVENTS.name: self._json(CLAIM_COLUMNS, rows)}).scalars())

    def lock_turns(
        self, connection: Connection, rows: Rows, hashes: list[str]
    ) -> tuple[dict[str, TurnState], set[str]]:
        turns: dict[str, TurnState] = {}
        erased: set[str] = set()
        params = {TURNS.name: self._json(NEW_TURN_COLUMNS, rows), "hashes": to_json(hashes).decode()}
        for row in connection.execute(self.lock, params):
            if row[0] is None:
                erased.add(row[-1])
            else:
                turns[row[0]] = from_row(row[:-1])
        return turns, erased

    def write(self, connection: Connection, turns: Rows, searches: Rows) -> None:
        connection.execute(
            self.write_all,
            {TURNS.name: self._json(COLUMNS, turns), SEARCHES.name: self._json(SEARCH_COLUMNS, searches)},
        )


class _SQLite(_Store):
    def __init__(self) -> None:
        super().__init__(sqlite.insert)
        self.claim_all = (
            sqlite.insert(EVENTS).on_conflict_do_nothing(index_elements=["event_id"]).returning(EVENTS.c.event_id)
        )
        self.lock = _lock_new_turns(sqlite.insert(TURNS))
        self.erased = select(ERASED.c.user_hash).where(ERASED.c.user_hash.in_(bindparam("hashes", expanding=True)))
        self.add_searches = sqlite.insert(SEARCHES)
        self.write_turns = _write_turns(sqlite.insert(TURNS))

    @staticmethod
    def _params(names: Sequence[str], rows: Rows) -> list[dict[str, Any]]:
        return [dict(zip(names, row, strict=True)) for row in rows]

    def claim(self, connection: Connection, rows: Rows, erasing: bool) -> set[str]:
        # The first write takes SQLite's database lock, held to the end of the transaction.
        return set(connection.execute(self.claim_all, self._params(CLAIM_COLUMNS, rows)).scalars())

    def lock_turns(
        self, connection: Connection, rows: Rows, hashes: list[str]
    ) -> tuple[dict[str, TurnState], set[str]]:
        result = connection.execute(self.lock, self._params(NEW_TURN_COLUMNS, rows))
        turns = {row[0]: from_row(row) for row in result}
        erased = set(connection.execute(self.erased, {"hashes": hashes}).scalars()) if hashes else set()
        return turns, erased

    def write(self, connection: Connection, turns: Rows, searches: Rows) -> None:
        if searches:
            connection.execute(self.add_searches, self._params(SEARCH_COLUMNS, searches))
        if turns:
            connection.execute(self.write_turns, self._params(COLUMNS, turns))


_stores: dict[str, _Store] = {}


def _store(connection: Connection) -> _Store:
    name = connection.dialect.name
    store = _stores.get(name)
    if store is None:
        store = _stores[name] = _Postgres() if name == "postgresql" else _SQLite()
    return store


def record(envelope: Envelope) -> bool:
    """Record one event. False when it was already recorded (a redelivery)."""
    return record_batch([envelope]) == 1


def record_batch(envelopes: Sequence[Envelope]) -> int:
    """Record a batch of events in one transaction, with the result of recording them one by one in
    this order. Returns how many were new (not recorded before, nor earlier in the batch)."""
    unique: dict[str, Envelope] = {}
    for envelope in envelopes:
        unique.setdefault(envelope.id, envelope)
    if not unique:
        return 0
    # Validate every payload before touching the database: a malformed event fails the batch up front.
    decoded = [(envelope, decode(envelope)) for envelope in unique.values()]
    now = db.utcnow()
    claims = [
        (envelope.id, envelope.type.value, envelope.correlation_id, envelope.source[:32], envelope.occurred_at, now)
        for envelope in sorted(unique.values(), key=lambda e: e.id)  # in key order: concurrent claims queue up
    ]
    erasing = any(envelope.type is EventType.USER_ERASED for envelope in unique.values())
    # A Core connection: the ORM session would add nothing here but its own cost.
    with db.get_engine().begin() as connection:
        store = _store(connection)
        claimed = store.claim(connection, claims, erasing)
        if not claimed:
            return 0
        new = [(envelope, payload) for envelope, payload in decoded if envelope.id in claimed]
        starts, users = _turns_and_users(new)
        turns: dict[str, TurnState] = {}
        erased: set[str] = set()
        if starts:
            rows = [(correlation_id, starts[correlation_id]) for correlation_id in sorted(starts)]
            turns, erased = store.lock_turns(connection, rows, sorted(user_hash(user) for user in users))
        loaded = {correlation_id: merged_values_of(turn) for correlation_id, turn in turns.items()}
        replay = Replay(turns, erased)
        for envelope, payload in new:
            replay.apply(envelope, payload)
        for user_id in replay.erasures:
            store.erase(connection, user_id)  # the replay did the same to the rows it holds
        for cutoff in replay.expiries:
            store.expire(connection, cutoff)
        changed = replay.changed(loaded)
        if changed or replay.searches:
            store.write(connection, [values_of(turn) for turn in changed], replay.searches)
        return len(new)


def _turns_and_users(new: list[tuple[Envelope, Payload]]) -> tuple[dict[str, Any], set[str]]:
    """The turns the new events affect, each with the time of the first of them (it would have created
    the row), and the users they would link to them."""
    starts: dict[str, Any] = {}
    users: set[str] = set()
    for envelope, payload in new:
        if affects_turn(payload):
            starts.setdefault(envelope.correlation_id, envelope.occurred_at)
            user_id = turn_user(payload)
            if user_id:
                users.add(user_id)
    return starts, users
