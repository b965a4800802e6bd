"""The inbound writer: one thread that stores webhooks' messages, several per transaction.

The webhook endpoint hands its message over and awaits the outcome; the thread takes whatever
has queued up meanwhile and stores it in one transaction on a connection it keeps (group commit).
Under load that is one commit for many messages; idle, it is one message per transaction with no
pool checkout. Nothing changes for Twilio: a webhook is answered only once its transaction has
committed. A batch that fails is retried message by message, so one bad message fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from services.gateway.held_connection import HeldConnection
from services.gateway.inbound import InboundMessageIn, InboundOutcome, store_inbound

log = logging.getLogger(__name__)

MAX_BATCH = 64


@dataclass(frozen=True)
class _Pending:
    message: InboundMessageIn
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[InboundOutcome]


_STOP = object()


def _storer(message: InboundMessageIn) -> Callable[[Connection], InboundOutcome]:
    return lambda conn: store_inbound(conn, message)


def _settle(future: asyncio.Future[InboundOutcome], result: InboundOutcome | BaseException) -> None:
    if future.done():  # the request was cancelled (client gone); what was stored stays stored
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class InboundWriter:
    """Stores inbound messages for the event loop's requests; ``on_queued`` runs after a commit
    that queued events (the outbox relay's wake-up)."""

    def __init__(self, on_queued: Callable[[], None] | None = None, max_batch: int = MAX_BATCH) -> None:
        self.on_queued = on_queued
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._held = HeldConnection()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._thread = threading.Thread(target=self._run, name="inbound-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    async def record(self, message: InboundMessageIn) -> InboundOutcome:
        """``record_inbound(message)``, done by the writer thread; raises what it would raise."""
        if not self.running:
            raise RuntimeError("the inbound writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InboundOutcome] = loop.create_future()
        self._queue.put(_Pending(message, loop, future))
        return await future

    def _run(self) -> None:
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    break
                assert isinstance(first, _Pending)
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    assert isinstance(item, _Pending)
                    batch.append(item)
                try:
                    results = self._write([p.message for p in batch])
                except Exception as exc:  # a bug here must fail these requests, not hang them
                    log.exception("the inbound writer failed on a batch")
                    results = [exc] * len(batch)
                self._deliver(batch, results)
        finally:
            self._held.close()
            self._fail_leftovers()

    def _write(self, messages: list[InboundMessageIn]) -> list[InboundOutcome | BaseException]:
        def store_all(conn: Connection) -> list[InboundOutcome | BaseException]:
            return [store_inbound(conn, message) for message in messages]

        try:
            return self._held.transaction(store_all)
        except Exception as exc:
            if len(messages) == 1:
                return [exc]
            log.warning("a batch of %d inbound messages failed (%s); storing them one by one",
                        len(messages), type(exc).__name__)
        results: list[InboundOutcome | BaseException] = []
        for message in messages:
            try:
                results.append(self._held.transaction(_storer(message)))
            except Exception as exc:
                results.append(exc)
        return results

    def _deliver(self, batch: list[_Pending], results: list[InboundOutcome | BaseException]) -> None:
        for pending, result in zip(batch, results, strict=True):
            with contextlib.suppress(RuntimeError):  # that request's loop is closed: nobody waits any more
                pending.loop.call_soon_threadsafe(_settle, pending.future, result)
        if self.on_queued is not None and any(isinstance(r, InboundOutcome) and r.events_queued for r in results):
            self.on_queued()

    def _fail_leftovers(self) -> None:
        """Requests that arrived while stopping (or after a crash of this thread) get an error, not a hang."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Pending):
                self._deliver([item], [RuntimeError("the inbound writer has stopped")])
