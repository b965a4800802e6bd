"""API keys of the admin API (everything under /api/v1 except webhooks).

A key is ``rtk_<prefix>_<secret>``: ``prefix`` is a random public id that finds the row, ``secret``
43 random letters and digits (256 bits). Only the SHA-256 of the whole token is stored; the token is shown once, when
created. A plain hash (not an HMAC under SECRET_KEY) is enough for 256-bit random tokens — nothing
to brute-force — and keeps every key valid when SECRET_KEY is rotated.

Requests present it as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``: a missing key is a
401 (with ``WWW-Authenticate``), a wrong or revoked one a 403.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, HTTPException
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import select, update

from libs.common.db import is_unique_violation, session_scope, utcnow
from libs.common.models.access import ApiKey

TOKEN_PREFIX = "rtk_"
_TOKEN = re.compile(r"^rtk_([0-9a-f]{12})_([A-Za-z0-9]{43})$")
# Letters and digits only: a double-click selects the whole token in a terminal. 43 of them: 256 bits.
_ALPHABET = string.ascii_letters + string.digits
_SECRET_CHARS = 43
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A key's last use is recorded at most this often: the admin API is not worth a write per request.
LAST_USED_GRANULARITY = timedelta(minutes=1)
# Compared against when the prefix finds nothing, so a miss costs what a hit costs.
_DUMMY_HASH = hashlib.sha256(b"repotalk: no such key").hexdigest()

__all__ = [
    "AUTH_RESPONSES",
    "AdminKey",
    "ApiKey",
    "ApiKeyError",
    "ErrorDetail",
    "create_key",
    "list_keys",
    "require_api_key",
    "revoke_key",
    "verify",
]


class ApiKeyError(ValueError):
    """A key cannot be created as asked (bad name, name taken by an active key)."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_name(name: str) -> str:
    name = name.strip()
    if not NAME.match(name):
        raise ApiKeyError("a key name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def create_key(name: str) -> str:
    """Create an active key named ``name`` and return its token (the only time it is visible)."""
    name = _check_name(name)
    with session_scope() as session:
        if session.scalar(select(ApiKey.id).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))) is not None:
            raise ApiKeyError(f"an active key named {name!r} exists; revoke it first")
    prefix = secrets.token_hex(6)
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_CHARS))
    token = f"{TOKEN_PREFIX}{prefix}_{secret}"
    try:
        with session_scope() as session:
            session.add(ApiKey(name=name, prefix=prefix, key_hash=_hash(token)))
    except Exception as exc:
        # Two creations of one name at once: the partial unique index keeps only the first.
        if is_unique_violation(exc):
            raise ApiKeyError(f"an active key named {name!r} exists; revoke it first") from None
        raise
    return token


def revoke_key(name: str) -> bool:
    """Revoke the active key named ``name``; False when there is none."""
    with session_scope() as session:
        result = session.execute(
            update(ApiKey)
            .where(ApiKey.name == name.strip(), ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(getattr(result, "rowcount", 0))


def list_keys(include_revoked: bool = False) -> list[ApiKey]:
    """Every key (no secrets in them: names, prefixes, dates), oldest first."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    with session_scope() as session:
        return list(session.scalars(query))


def _lookup(token: str) -> ApiKey | None:
    """The row the token names when its hash matches (active or revoked); None otherwise."""
    match = _TOKEN.match(token.strip())
    prefix = match.group(1) if match else ""
    row = None
    if prefix:
        with session_scope() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    expected = row.key_hash if row is not None else _DUMMY_HASH
    # Constant time in the token: a wrong guess learns nothing from how long the comparison took.
    if not hmac.compare_digest(_hash(token.strip()), expected) or row is None:
        return None
    return row


def _touch(key: ApiKey) -> None:
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_GRANULARITY:
        return
    with session_scope() as session:
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    key.last_used_at = now


def verify(token: str) -> ApiKey | None:
    """The active key ``token`` is, recording its use; None for a wrong, malformed or revoked token."""
    key = _lookup(token)
    if key is None or not key.active:
        return None
    _touch(key)
    return key


# --- FastAPI -------------------------------------------------------------------------------------

REALM = 'Bearer realm="repotalk"'


class ErrorDetail(BaseModel):
    """Every error the API returns: what went wrong, in words."""

    detail: str


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorDetail(BaseModel):
    """A 422: where the request is invalid and why (the offending value is never echoed)."""

    detail: list[ValidationErrorItem]


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "No API key: send `Authorization: Bearer <key>` or `X-API-Key`"},
    403: {"model": ErrorDetail, "description": "The API key is wrong or revoked"},
    413: {"model": ErrorDetail, "description": "The request body is larger than the API accepts"},
    422: {"model": ValidationErrorDetail, "description": "The request is invalid (where and why)"},
}

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKeyBearer",
    description="An API key (`repotalk api-key create NAME`) as `Authorization: Bearer <key>`",
)
_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="The same API key in the `X-API-Key` header",
)


def require_api_key(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> ApiKey:
    """The request's active API key, or a 401 (none given) / 403 (wrong or revoked)."""
    token = (bearer.credentials if bearer is not None else "") or (header or "")
    if not token.strip():
        raise HTTPException(
            401,
            detail="an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>` "
            "(create one with `repotalk api-key create NAME`)",
            headers={"WWW-Authenticate": REALM},
        )
    key = _lookup(token)
    if key is None:
        raise HTTPException(403, detail="the API key is not valid")
    if not key.active:
        raise HTTPException(403, detail="the API key has been revoked")
    _touch(key)
    return key


AdminKey = Annotated[ApiKey, Depends(require_api_key)]


def describe(key: ApiKey) -> dict[str, str | None]:
    """A key as shown by `repotalk api-key list`: never the secret, only the public prefix."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat(timespec="seconds") if value is not None else None

    return {
        "name": key.name,
        "prefix": f"{TOKEN_PREFIX}{key.prefix}_…",
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
    }
