"""The processor's tables as SQLAlchemy Core tables.

The processor runs Core statements on one connection per transaction instead of the ORM: an event
touches a handful of rows once, so identity map, unit of work and object loading were most of its
CPU without buying anything. The models in libs.common.models.conversations stay the definition.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from libs.common.models.code_index import Repository
from libs.common.models.conversations import ChatSession, Erasure, Turn

SESSIONS = cast(Table, ChatSession.__table__)
TURNS = cast(Table, Turn.__table__)
ERASURES = cast(Table, Erasure.__table__)
REPOSITORIES = cast(Table, Repository.__table__)
