"""The gateway's part of the retention job: messages, outbox rows and users older than the cutoff."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func

from libs.common.events import Envelope, RetentionDue
from libs.common.retention import delete_older
from services.gateway.sql import INBOUND, OUTBOUND, OUTBOX, USERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    inbound: int
    outbound: int
    outbox: int
    users: int


def prune(cutoff: datetime) -> Pruned:
    """Delete inbound and outbound messages, outbox rows and users (address included) older than
    ``cutoff``. A user goes once their last message is older: their number is kept only while needed to
    reply. An outbox row still unpublished at that age is dropped too: a reply that late could not be sent
    (WhatsApp's 24-hour window) and the row holds a message body."""
    pruned = Pruned(
        inbound=delete_older(INBOUND, INBOUND.c.received_at, cutoff),
        outbound=delete_older(OUTBOUND, OUTBOUND.c.created_at, cutoff),
        outbox=delete_older(OUTBOX, OUTBOX.c.created_at, cutoff),
        users=delete_older(USERS, func.coalesce(USERS.c.last_inbound_at, USERS.c.created_at), cutoff),
    )
    log.info("retention: removed %d inbound, %d outbound, %d outbox rows and %d users older than %s",
             pruned.inbound, pruned.outbound, pruned.outbox, pruned.users, cutoff.isoformat(timespec="seconds"))
    return pruned


def handle_retention_due(envelope: Envelope) -> None:
    due = envelope.data()
    assert isinstance(due, RetentionDue)
    prune(due.cutoff)
