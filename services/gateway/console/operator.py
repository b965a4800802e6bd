"""Operator pages behind the admin API key: repositories, recent turns, usage.

Indexing is asked of code_search's repository admin API (``POST /api/v1/repos``,
``POST /api/v1/repos/{name}/reindex``) through this application in-process — the gateway serves
that API in both modes (forwarding it to code_search in distributed mode) — so the console imports
no other service. The API records the request and answers 202 with its generation; the console's
job then waits until code_search reports that generation indexed (or failed), and the page follows
the run through ``index_progress`` and ``repositories``, which code_search writes as it goes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.gateway.console import access, charts, insights, loopback
from services.gateway.console.chat import STREAM_SECONDS
from services.gateway.console.pages import login_redirect, page

log = logging.getLogger(__name__)

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)

# A refusal of the admin API (a bad path, a clone that fails at once) usually comes back within
# this; the browser then gets it as the answer to its request instead of as a later event.
QUICK_ANSWER_SECONDS = 1.5
POLL_SECONDS = 0.4
# How long a job waits for code_search to index what it asked for (a large clone takes minutes).
FOLLOW_SECONDS = 3600.0
JOBS_KEPT = 20


class AddRepoBody(BaseModel):
    source: str = Field(min_length=1, max_length=2000, description="a path on the server or a git URL")
    name: str | None = Field(default=None, max_length=100)
    branch: str | None = Field(default=None, max_length=200)


@dataclass
class Job:
    id: str
    action: str  # add | reindex
    target: str
    state: str = "running"  # running | done | failed
    detail: str | None = None
    started: float = 0.0
    seconds: float | None = None


_tasks: set[asyncio.Task[None]] = set()


def _jobs(app: Any) -> dict[str, Job]:
    """This application's requests to the admin API (kept per app: tests run several in one process)."""
    jobs: dict[str, Job] | None = getattr(app.state, "console_jobs", None)
    if jobs is None:
        jobs = app.state.console_jobs = {}
    return jobs


def _admin_headers(request: Request) -> dict[str, str]:
    # The operator's own key: the admin API checks it again, and records its use.
    return {"Authorization": f"Bearer {access.presented_key(request)}"}


async def _call_admin_api(app: Any, path: str, payload: dict[str, Any] | None, headers: dict[str, str],
                          job: Job) -> None:
    try:
        async with loopback.client(app, timeout=None) as http:  # a big clone may take minutes
            response = await http.post(path, json=payload, headers=headers)
    except (httpx.HTTPError, OSError) as exc:
        job.state, job.detail = "failed", f"the admin API could not be reached: {type(exc).__name__}"
    else:
        if response.status_code == 202:
            data = response.json()
            job.target = str(data.get("repo") or job.target)
            await _follow(job, int(data.get("generation") or 0))
        elif response.status_code in (200, 201):
            data = response.json()
            job.state = "done"
            job.target = str(data.get("repo") or job.target)
            job.detail = (f"{data.get('files', 0)} files, {data.get('symbols', 0)} symbols, "
                          f"{data.get('chunks', 0)} chunks in {float(data.get('seconds') or 0):.1f} s")
        elif response.status_code == 404 and path == "/api/v1/repos":
            job.state, job.detail = "failed", "this gateway does not serve code_search's repository admin API"
        else:
            job.state, job.detail = "failed", _detail(response)
    job.seconds = time.monotonic() - job.started


async def _follow(job: Job, generation: int) -> None:
    """Until code_search has indexed ``generation`` of the job's repository (or failed to)."""
    while time.monotonic() - job.started < FOLLOW_SECONDS:
        run = await run_in_threadpool(insights.run_state, job.target, generation)
        if run.state != "running":
            elapsed = time.monotonic() - job.started
            job.state = run.state
            job.detail = f"{run.detail} in {elapsed:.1f} s" if run.state == "done" else run.detail
            return
        await asyncio.sleep(POLL_SECONDS)
    job.state, job.detail = "failed", "code_search has not indexed it yet: is a code_search worker running?"


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):  # a validation error: where, not the value
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
    return f"{response.status_code}: {detail or response.text[:200]}"


async def _start(request: Request, action: str, target: str, path: str, payload: dict[str, Any] | None) -> Response:
    job = Job(id=uuid.uuid4().hex[:12], action=action, target=target, started=time.monotonic())
    jobs = _jobs(request.app)
    jobs[job.id] = job
    for old in sorted(jobs.values(), key=lambda j: j.started)[:-JOBS_KEPT]:
        jobs.pop(old.id, None)
    task = asyncio.create_task(_call_admin_api(request.app, path, payload, _admin_headers(request), job))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    done, _ = await asyncio.wait({task}, timeout=QUICK_ANSWER_SECONDS)
    if done and job.state == "failed":
        status = 400
        head = (job.detail or "").split(":", 1)[0]
        if head.isdigit() and 400 <= int(head) < 500:
            status = int(head)
        return JSONResponse({"detail": job.detail, "job": asdict(job)}, status_code=status)
    return JSONResponse({"job": asdict(job)}, status_code=200 if done else 202)


# -- pages ------------------------------------------------------------------------------------------


@router.get("/repos", response_class=HTMLResponse)
async def repos_page(request: Request) -> Response:
    operator = await access.operator_of(request)
    if operator is None:
        return login_redirect(request)
    repos = await run_in_threadpool(insights.repositories)
    return page(request, "repos.html", active="repos", operator=operator, repos=repos)


@router.get("/turns", response_class=HTMLResponse)
async def turns_page(request: Request, bodies: bool = False) -> Response:
    operator = await access.operator_of(request)
    if operator is None:
        return login_redirect(request)
    rows = await run_in_threadpool(insights.recent_turns, insights.TURN_LIMIT, bodies)
    return page(request, "turns.html", active="turns", operator=operator, turns=rows, bodies=bodies,
                hops=insights.HOPS)


@router.get("/usage", response_class=HTMLResponse)
async def usage_page(request: Request, hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24) -> Response:
    operator = await access.operator_of(request)
    if operator is None:
        return login_redirect(request)
    summary = await run_in_threadpool(insights.usage, hours)
    latency_rows = [(hop.removesuffix("_ms"), values.get("p95") or 0.0) for hop, values in summary.latency.items()
                    if values.get("n")]
    figures = {
        "per_hour": charts.columns(summary.per_hour, title=f"Messages per {'hour' if hours <= 48 else 'day'}",
                                   every=max(1, len(summary.per_hour) // 8)),
        "latency": charts.rows(latency_rows, title="p95 latency per hop (ms)", unit="ms"),
        "kinds": charts.rows(summary.search_kinds, title="Searches by ranker"),
        "cost": charts.rows(summary.cost_by_provider, title="Cost per provider (USD)", unit="$"),
    }
    return page(request, "usage.html", active="usage", operator=operator, usage=summary, figures=figures,
                hours=hours)


# -- repository actions -----------------------------------------------------------------------------


@router.post("/repos")
async def add_repository(body: AddRepoBody, request: Request, _: access.OperatorDep) -> Response:
    """Index a path on the server or clone a git URL (``branch`` optional) and index it."""
    payload = {"source": body.source.strip(), "name": (body.name or "").strip() or None,
               "branch": (body.branch or "").strip() or None}
    if not payload["source"]:
        raise HTTPException(400, "give a path on the server or a git URL")
    return await _start(request, "add", str(payload["name"] or payload["source"]), "/api/v1/repos", payload)


@router.post("/repos/{name}/reindex")
async def reindex_repository(name: str, request: Request, _: access.OperatorDep) -> Response:
    return await _start(request, "reindex", name, f"/api/v1/repos/{quote(name, safe='')}/reindex", None)


def _job_list(app: Any) -> list[dict[str, Any]]:
    return [asdict(j) for j in sorted(_jobs(app).values(), key=lambda j: -j.started)]


@router.get("/repos/data")
async def repositories_data(request: Request, _: access.OperatorDep) -> dict[str, Any]:
    return {"repos": await run_in_threadpool(insights.repositories), "jobs": _job_list(request.app)}


@router.get("/repos/stream")
async def repositories_stream(request: Request, _: access.OperatorDep) -> StreamingResponse:
    """Server-sent ``repos`` events whenever the repositories, their progress or the console's jobs change."""
    return StreamingResponse(_repo_events(request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _repo_events(request: Request) -> AsyncIterator[str]:
    last = ""
    beat = started = time.monotonic()
    yield "retry: 1000\n\n"
    while not await request.is_disconnected() and time.monotonic() - started < STREAM_SECONDS:
        data = json.dumps({"repos": await run_in_threadpool(insights.repositories), "jobs": _job_list(request.app)},
                          separators=(",", ":"))
        if data != last:
            last = data
            beat = time.monotonic()
            yield f"event: repos\ndata: {data}\n\n"
        elif time.monotonic() - beat > 15:
            beat = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)
