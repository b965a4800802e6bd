"""Process-wide caches that must be dropped when settings change (tests) or after a fork (workers)."""

from __future__ import annotations

from kombu.transport import memory

from libs.common import bus, db, security
from libs.common.settings import get_settings


def reset_process_state() -> None:
    get_settings.cache_clear()
    security._fernet.cache_clear()
    db.reset()
    bus.reset()
    # The in-memory broker keeps its queues on the class, beyond any one Celery app: messages nobody
    # consumed would otherwise reach the next user of the process (the next test).
    memory.Channel.queues.clear()
    memory.Channel.events.clear()
