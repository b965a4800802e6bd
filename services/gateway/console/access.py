"""Who may use the console.

Operator pages need an admin API key (``repotalk api-key create NAME``): from the login form, kept
in an HttpOnly, SameSite=Strict cookie scoped to /console, or sent as ``Authorization: Bearer`` /
``X-API-Key`` like the rest of the admin API. The chat playground is open while the sandbox channel
is active outside production (replies stay in the database, nobody is messaged); otherwise it too
needs the key, because its messages would go out through Twilio to the chosen numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from libs.common import api_keys
from libs.common.settings import get_settings

COOKIE = "repotalk_console_key"
COOKIE_PATH = "/console"
COOKIE_MAX_AGE = 8 * 3600


@dataclass(frozen=True)
class Operator:
    name: str


def presented_key(request: Request) -> str:
    """The key a request carries: header first (API clients), then the console's cookie (browsers)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header = request.headers.get("x-api-key", "").strip()
    if header:
        return header
    return request.cookies.get(COOKIE, "").strip()


async def operator_for(token: str) -> Operator | None:
    """The operator whose active key ``token`` is, or None (wrong, malformed, revoked or empty)."""
    if not token:
        return None
    key = await run_in_threadpool(api_keys.verify, token)
    return Operator(name=key.name) if key is not None else None


async def operator_of(request: Request) -> Operator | None:
    """The operator whose active key the request carries, or None."""
    return await operator_for(presented_key(request))


async def require_operator(request: Request) -> Operator:
    """For the console's JSON endpoints: 401 without a key, 403 with a wrong or revoked one."""
    token = presented_key(request)
    if not token:
        raise HTTPException(401, "an admin API key is required: sign in at /console/login "
                                 "(create a key with `repotalk api-key create NAME`)",
                            headers={"WWW-Authenticate": api_keys.REALM})
    operator = await operator_of(request)
    if operator is None:
        raise HTTPException(403, "the API key is not valid (wrong or revoked)")
    return operator


OperatorDep = Annotated[Operator, Depends(require_operator)]


def playground_open() -> bool:
    """The playground needs no key: replies stay in the sandbox and this is not production."""
    settings = get_settings()
    return settings.twilio.sandbox and settings.app.env != "production"


async def playground_access(request: Request) -> Operator | None:
    """For the playground's endpoints: None when open to anyone, the operator otherwise (or 401/403)."""
    if playground_open():
        return None
    return await require_operator(request)


PlaygroundDep = Annotated[Operator | None, Depends(playground_access)]
