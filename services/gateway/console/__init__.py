"""The web console at /console: the chat playground and the operator pages.

Server-rendered HTML (Jinja2) with one small script per interactive page, every asset served from
this package: nothing is fetched from outside the machine.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.gateway.console import chat, operator, pages


def install(app: FastAPI) -> None:
    """Mount the console's routes and static files on the gateway application."""
    for router in (pages.router, chat.router, operator.router):
        app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=pages.STATIC_DIR), name="console-static")
