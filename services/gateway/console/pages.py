"""Templates, the login form and the navigation shared by every console page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from services.gateway.console import access

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
STATIC_DIR = HERE / "static"

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("operator", None)
    context.setdefault("playground_open", access.playground_open())
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def _safe_next(target: str | None) -> str:
    # Only a console path: a login must never bounce the browser to another site.
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/repos"


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='/')}", status_code=303)


@router.get("", response_class=RedirectResponse)
@router.get("/", response_class=RedirectResponse)
async def console_home() -> RedirectResponse:
    return RedirectResponse("/console/chat", status_code=307)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return page(request, "login.html", next=_safe_next(next), error=None,
                operator=await access.operator_of(request))


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request, key: Annotated[str, Form(max_length=200)] = "", next: Annotated[str, Form()] = ""
) -> Response:
    target = _safe_next(next)
    if not key.strip():
        return page(request, "login.html", status_code=401, next=target,
                    error="Enter an admin API key (create one with repotalk api-key create NAME).")
    operator = await access.operator_for(key.strip())
    if operator is None:
        return page(request, "login.html", status_code=403, next=target,
                    error="That API key is not valid: it is wrong or has been revoked.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        access.COOKIE, key.strip(), max_age=access.COOKIE_MAX_AGE, path=access.COOKIE_PATH, httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", response_class=RedirectResponse)
async def logout() -> RedirectResponse:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(access.COOKIE, path=access.COOKIE_PATH)
    return response

