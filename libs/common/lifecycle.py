"""Process-wide caches that must be dropped when settings change (tests) or after a fork (workers)."""

from __future__ import annotations

from libs.common import bus, db, security
from libs.common.settings import get_settings


def reset_process_state() -> None:
    get_settings.cache_clear()
    security._fernet.cache_clear()
    db.reset()
    bus.reset()
