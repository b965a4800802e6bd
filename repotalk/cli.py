"""The `repotalk` command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from libs.common.logs import configure_logging
from libs.common.settings import get_settings

app = typer.Typer(help="repotalk: ask your codebase from WhatsApp.", no_args_is_help=True, add_completion=False)

ServerOpt = Annotated[str, typer.Option("--server", help="URL of a running repotalk server.")]
FromOpt = Annotated[str, typer.Option("--from", help="The WhatsApp address to act as.")]


def _default_server() -> str:
    return os.environ.get("REPOTALK_SERVER", f"http://127.0.0.1:{get_settings().app.port}")


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="Port (default: $PORT or 8000).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default: $HOST or 127.0.0.1).")] = None,
) -> None:
    """Embedded: every service in one process (SQLite, in-memory broker, no keys needed)."""
    # Embedded means the in-process broker: thread workers share one Celery app and its memory queues.
    os.environ["BROKER_URL"] = "memory://localhost/"
    get_settings.cache_clear()
    settings = get_settings()
    configure_logging("repotalk")
    import uvicorn

    from repotalk.embedded import embedded_workers, prepare
    from repotalk.services import extra_routers
    from services.gateway.app import create_app

    prepare()
    bind_host = host or settings.app.host
    bind_port = port or settings.app.port
    with embedded_workers():
        api = create_app(extra_routers=extra_routers())
        url = f"http://{'127.0.0.1' if bind_host in ('0.0.0.0', '::') else bind_host}:{bind_port}"
        typer.echo(f"repotalk is running (embedded) at {url}")
        typer.echo(f"  webhook:  {url}/webhooks/twilio")
        typer.echo('  try:      repotalk ask "where is the webhook signature verified?"')
        uvicorn.run(api, host=bind_host, port=bind_port, log_level="warning", access_log=False)


@app.command()
def gateway(
    port: Annotated[int | None, typer.Option(help="Port (default: $PORT or 8000).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default: $HOST or 127.0.0.1).")] = None,
) -> None:
    """The gateway's HTTP API (webhooks, health, admin) under uvicorn."""
    settings = get_settings()
    configure_logging("gateway")
    import uvicorn

    from repotalk.services import extra_routers
    from services.gateway.app import create_app

    api = create_app(extra_routers=extra_routers())
    uvicorn.run(api, host=host or settings.app.host, port=port or settings.app.port, log_level="warning",
                access_log=False)


@app.command()
def worker(
    service: Annotated[str, typer.Argument(help="gateway, processor, code_search, ai_engine or analytics")],
) -> None:
    """A Celery worker consuming one service's queue."""
    from celery.signals import worker_ready, worker_shutdown

    from libs.common import bus
    from repotalk.services import parse_service, worker_module

    try:
        svc = parse_service(service)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = get_settings()
    configure_logging(svc.value)
    module = worker_module(svc)
    celery = bus.get_celery()
    bus.register_service(celery, module.SERVICE, module.HANDLERS, getattr(module, "BATCH_HANDLER", None))
    module.startup()
    run_dir = os.environ.get("REPOTALK_RUN_DIR")

    @worker_ready.connect(weak=False)
    def _announce_ready(**_: Any) -> None:
        if run_dir:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / f"{svc.value}.ready").write_text(str(os.getpid()))

    @worker_shutdown.connect(weak=False)
    def _flush(**_: Any) -> None:
        bus.flush_batches()

    if settings.broker.health_port:
        from libs.common.health import serve_probes

        serve_probes(settings.app.host, settings.broker.health_port)

    options = bus.worker_options(settings, svc)
    celery.Worker(**options, loglevel=settings.app.log_level.upper(), redirect_stdouts=False).start()


@app.command()
def migrate() -> None:
    """Upgrade the database to the latest schema (Alembic)."""
    configure_logging("migrate")
    from libs.common.schema import migrate as run_migrations

    run_migrations()
    typer.echo("database is at the latest schema")


@app.command()
def index(
    path: Annotated[Path, typer.Argument(help="A repository's working tree.", exists=True, file_okay=False)],
    name: Annotated[str | None, typer.Option(help="Repository name (default: the folder's name).")] = None,
) -> None:
    """Index (or incrementally re-index) a repository."""
    configure_logging("index")
    from libs.common.schema import migrate as run_migrations
    from services.code_search.engine import index_repository

    run_migrations()
    with typer.progressbar(length=0, label="indexing") as bar:
        def progress(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        summary = index_repository(path.resolve(), name=name, progress=progress)
    typer.echo(summary.describe())


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Free text, an identifier, or a pattern with --regex.")],
    repo: Annotated[list[str] | None, typer.Option("--repo", help="Limit to this repository (repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    regex: Annotated[bool, typer.Option("--regex", help="Treat the query as a regular expression.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
) -> None:
    """Search the indexed repositories."""
    configure_logging("search")
    from services.code_search.engine import search as run_search

    result = run_search(query, repos=repo or None, limit=limit, mode="pattern" if regex else "question")
    if result.error:
        typer.echo(result.error, err=True)
        raise typer.Exit(2)
    if as_json:
        fields = ("repo", "path", "line", "end_line", "symbol", "score", "snippet")
        typer.echo(json.dumps([{k: getattr(h, k) for k in fields} for h in result.hits], indent=2))
        return
    if not result.hits:
        typer.echo("no results")
        return
    for hit in result.hits:
        label = f"  {hit.symbol}" if hit.symbol else ""
        typer.echo(typer.style(f"{hit.repo}/{hit.path}:{hit.line}-{hit.end_line}", bold=True) + label)
        for line in hit.snippet.splitlines()[:6]:
            typer.echo(f"    {line}")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="What to ask, as you would on WhatsApp.")],
    server: ServerOpt = "",
    sender: FromOpt = "whatsapp:+15550001111",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 60.0,
) -> None:
    """Send a signed WhatsApp webhook to a running server and print the reply."""
    from repotalk.client import AskError, Client

    client = Client(server or _default_server(), get_settings().twilio.auth_token, sender, timeout)
    try:
        typer.echo(client.ask(question).text)
    except AskError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"cannot reach {client.server}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()


@app.command()
def chat(server: ServerOpt = "", sender: FromOpt = "whatsapp:+15550001111") -> None:
    """An interactive WhatsApp-like chat in the terminal (Ctrl-D to leave)."""
    from repotalk.client import AskError, Client

    client = Client(server or _default_server(), get_settings().twilio.auth_token, sender)
    typer.echo(f"chatting with {client.server} as {sender}; /help for commands, Ctrl-D to leave")
    try:
        while True:
            try:
                text = input("you> ").strip()
            except EOFError:
                typer.echo("")
                return
            if not text:
                continue
            try:
                typer.echo(f"repotalk> {client.ask(text).text}\n")
            except (AskError, OSError) as exc:
                typer.echo(f"! {exc}", err=True)
    finally:
        client.close()

