"""The allow-list: who may use the assistant, decided before anything about a message is stored.

Off by default. When on (``ALLOW_LIST``, ``ALLOWED_NUMBERS`` or ``INVITE_CODES``), an inbound message
is let through when its sender's keyed hash (the user id) is configured or has been admitted.
Anyone else is answered directly in the webhook's TwiML — ``JOIN <code>`` with a valid invite code
admits them (only the hashed id is stored), anything else gets one polite refusal per
``ACCESS_REFUSAL_INTERVAL_HOURS`` — and nothing about them is written anywhere: no inbound row, no
user, no event. The refusal's rate limit lives in this process's memory (hashed ids, bounded).

Allowed users cost a set lookup; an admitted user is looked up in the database once and then
remembered for ``ADMITTED_TTL`` seconds (so a removal reaches every gateway replica within that).
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections import OrderedDict
from xml.sax.saxutils import escape

from fastapi import Response
from sqlalchemy import delete
from starlette.concurrency import run_in_threadpool

from libs.common import db
from libs.common.models.access import AllowedUser
from libs.common.security import user_id_for
from libs.common.settings import AccessSettings, Settings, get_settings

log = logging.getLogger(__name__)

ADMITTED_TTL = 60.0
# Someone typing their code wrong hears so again soon; a guesser learns nothing faster from it.
WRONG_CODE_INTERVAL = 60.0
MAX_REMEMBERED_REFUSALS = 100_000
JOIN = re.compile(r"^\s*/?join\s+(\S+)\s*$", re.IGNORECASE)

REFUSAL = (
    "Hi! This is a private code assistant: it only answers members of its team, and your number is not "
    "on its list. If you should have access, ask your team for an invite code and send JOIN <code>."
)
REFUSAL_NO_INVITES = (
    "Hi! This is a private code assistant: it only answers members of its team, and your number is not "
    "on its list. If you should have access, ask your team's admin to add you."
)
WRONG_CODE = "Sorry, that invite code is not valid. Check it with your team and send JOIN <code> again."
WELCOME = "Welcome! You can now ask me about your team's code. Send /help to see what I can do."
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def twiml_message(text: str) -> Response:
    """A reply Twilio sends for us: nothing is stored, nothing is queued."""
    body = f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(text)}</Message></Response>'
    return Response(content=body, media_type="text/xml")


class AccessList:
    """The allow-list of one settings generation (rebuilt when the settings change, as in tests)."""

    def __init__(self, settings: AccessSettings) -> None:
        self.restricted = settings.restricted
        self.configured = frozenset(_ids(settings.allowed_numbers))
        self.codes = [code.encode() for code in settings.codes()]
        self.refusal_interval = settings.refusal_interval_hours * 3600
        self._admitted: dict[str, float] = {}  # user id -> monotonic time until which it is trusted
        self._refused: OrderedDict[str, float] = OrderedDict()  # user id -> when last refused
        self._lock = threading.Lock()

    # -- the decision --------------------------------------------------------------------------

    def allowed_cached(self, user_id: str) -> bool:
        if user_id in self.configured:
            return True
        until = self._admitted.get(user_id)
        return until is not None and until > time.monotonic()

    def admitted_in_db(self, user_id: str) -> bool:
        with db.session_scope() as session:
            found = session.get(AllowedUser, user_id) is not None
        if found:
            self._admitted[user_id] = time.monotonic() + ADMITTED_TTL
        return found

    def valid_code(self, given: str) -> bool:
        candidate = given.encode()
        # Every code compared, in constant time each: the answer's timing says nothing about the codes.
        matches = [hmac.compare_digest(candidate, code) for code in self.codes]
        return any(matches)

    def admit(self, user_id: str, via: str) -> None:
        with db.session_scope() as session:
            if session.get(AllowedUser, user_id) is None:
                session.add(AllowedUser(user_id=user_id, via=via))
        self._admitted[user_id] = time.monotonic() + ADMITTED_TTL
        with self._lock:
            self._refused.pop(user_id, None)
            self._refused.pop(user_id + ":code", None)

    def should_tell(self, key: str, interval: float) -> bool:
        """True at most once per ``interval`` seconds for one ``key`` (in this process's memory)."""
        now = time.monotonic()
        with self._lock:
            last = self._refused.get(key)
            if last is not None and now - last < interval:
                return False
            self._refused[key] = now
            self._refused.move_to_end(key)
            while len(self._refused) > MAX_REMEMBERED_REFUSALS:
                self._refused.popitem(last=False)
            return True

    async def screen(self, address: str, body: str) -> Response | None:
        """None when the sender may go on; otherwise the webhook's whole answer (nothing is stored)."""
        user_id = user_id_for(address)
        if self.allowed_cached(user_id):
            return None
        if await run_in_threadpool(self.admitted_in_db, user_id):
            return None
        join = JOIN.match(body)
        if join is not None and self.codes:
            if self.valid_code(join.group(1)):
                await run_in_threadpool(self.admit, user_id, "invite")
                log.info("user %s admitted with an invite code", user_id)
                return twiml_message(WELCOME)
            log.info("user %s sent a wrong invite code", user_id)
            if self.should_tell(user_id + ":code", WRONG_CODE_INTERVAL):
                return twiml_message(WRONG_CODE)
            return Response(EMPTY_TWIML, media_type="text/xml")
        if not self.should_tell(user_id, self.refusal_interval):
            log.info("message from %s refused silently (not on the allow-list, already told)", user_id)
            return Response(EMPTY_TWIML, media_type="text/xml")
        log.info("message from %s refused (not on the allow-list)", user_id)
        return twiml_message(REFUSAL if self.codes else REFUSAL_NO_INVITES)


def _ids(spec: str) -> list[str]:
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    return [entry if entry.startswith("u_") else user_id_for(_as_address(entry)) for entry in entries]


def _as_address(number: str) -> str:
    """'+1 415 555 0100' -> 'whatsapp:+1 415 555 0100' (user ids are computed over the channel address)."""
    return number if ":" in number else f"whatsapp:{number}"


def hashed_id(number: str) -> str:
    """The id an allow-list entry for ``number`` stands for (what `repotalk allow-list hash` prints)."""
    return user_id_for(_as_address(number))


_current: tuple[Settings, AccessList] | None = None


def access_list() -> AccessList:
    """The process's allow-list for the current settings (a new one after ``get_settings.cache_clear()``)."""
    global _current
    settings = get_settings()
    current = _current
    if current is None or current[0] is not settings:
        current = _current = (settings, AccessList(settings.access))
    return current[1]


def add_user(number: str) -> str:
    """Admit ``number`` (by its hashed id) as `repotalk allow-list add` does; returns the id."""
    user_id = hashed_id(number)
    with db.session_scope() as session:
        if session.get(AllowedUser, user_id) is None:
            session.add(AllowedUser(user_id=user_id, via="cli"))
    return user_id


def remove_user(number_or_id: str) -> bool:
    """Withdraw an admission (by number or `u_…` id); other gateways notice within ADMITTED_TTL."""
    user_id = number_or_id if number_or_id.startswith("u_") else hashed_id(number_or_id)
    with db.session_scope() as session:
        result = session.execute(delete(AllowedUser).where(AllowedUser.user_id == user_id))
        removed = bool(getattr(result, "rowcount", 0))
    access_list()._admitted.pop(user_id, None)
    return removed

