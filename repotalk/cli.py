"""The `repotalk` command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from libs.common import telemetry
from libs.common.logs import configure_logging
from libs.common.settings import get_settings

app = typer.Typer(help="repotalk: ask your codebase from WhatsApp.", no_args_is_help=True, add_completion=False)

# Seconds a stopping HTTP server waits for open requests: the console's live streams (server-sent
# events) never end by themselves, and a webhook is answered in milliseconds.
SHUTDOWN_GRACE = 5

ServerOpt = Annotated[str, typer.Option("--server", help="URL of a running repotalk server.")]
FromOpt = Annotated[str, typer.Option("--from", help="The WhatsApp address to act as.")]


@app.callback()
def _check_settings() -> None:
    # Bad settings (production with development secrets, a malformed value) end here with the reasons,
    # not with a traceback from deep inside whichever command ran first.
    from pydantic import ValidationError

    from libs.common.settings import ProductionSettingsError

    try:
        get_settings()
    except ProductionSettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        reasons = "\n".join(f"  - {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"invalid settings:\n{reasons}", err=True)
        raise typer.Exit(2) from None


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
    telemetry.setup("repotalk", role="embedded")
    import uvicorn

    from repotalk.beat import embedded_beat
    from repotalk.embedded import embedded_workers, prepare
    from repotalk.services import extra_routers
    from services.gateway.app import create_app

    prepare()
    bind_host = host or settings.app.host
    bind_port = port or settings.app.port
    with embedded_workers(), embedded_beat():
        api = create_app(extra_routers=extra_routers())
        url = f"http://{'127.0.0.1' if bind_host in ('0.0.0.0', '::') else bind_host}:{bind_port}"
        typer.echo(f"repotalk is running (embedded) at {url}")
        typer.echo(f"  webhook:  {url}/webhooks/twilio")
        typer.echo(f"  browser:  {url}/console/chat   (operators: {url}/console/repos)")
        typer.echo('  try:      repotalk ask "where is the webhook signature verified?"')
        _announce_local_key(settings.app.data_dir, url)
        uvicorn.run(api, host=bind_host, port=bind_port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=SHUTDOWN_GRACE)


def _announce_local_key(data_dir: Path, url: str) -> None:
    from repotalk.local_key import ensure_local_key, key_file

    token = ensure_local_key(data_dir)
    if token is None:
        typer.echo("  API:      send one of your API keys (`repotalk api-key list`) to /api/v1")
        return
    path = key_file(data_dir).resolve()
    typer.echo(f"  API key:  {token}  (kept in {path}, owner-only)")
    typer.echo(f'  API:      curl -H "Authorization: Bearer $(cat {path})" {url}/api/v1/analytics/summary')


@app.command()
def gateway(
    port: Annotated[int | None, typer.Option(help="Port (default: $PORT or 8000).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default: $HOST or 127.0.0.1).")] = None,
) -> None:
    """The gateway's HTTP API (webhooks, health, admin) under uvicorn."""
    settings = get_settings()
    configure_logging("gateway")
    telemetry.setup("gateway", role="http")  # before the app and its engine exist: both get traced
    import uvicorn

    from repotalk.services import extra_routers
    from services.gateway.app import create_app

    api = create_app(extra_routers=extra_routers())
    uvicorn.run(api, host=host or settings.app.host, port=port or settings.app.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=SHUTDOWN_GRACE)


@app.command()
def worker(
    service: Annotated[str, typer.Argument(help="gateway, processor, code_search, ai_engine or analytics")],
) -> None:
    """A Celery worker consuming one service's queue."""
    from celery.signals import worker_ready, worker_shutdown

    from repotalk.observability import prepare_worker_metrics, start_worker_tracing

    prepare_worker_metrics(get_settings())  # before prometheus_client is first imported (by the bus)
    from libs.common import bus
    from repotalk.services import parse_service, worker_module

    try:
        svc = parse_service(service)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = get_settings()
    configure_logging(svc.value)
    start_worker_tracing(settings, svc)
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
        stop = getattr(module, "shutdown", None)
        if stop is not None:
            stop()

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
def beat() -> None:
    """The scheduler (Celery beat): publishes retention.due every RETENTION_INTERVAL_HOURS (run one)."""
    settings = get_settings()
    configure_logging("beat")
    from repotalk.beat import run

    if settings.broker.health_port:
        from libs.common.health import serve_probes

        serve_probes(settings.app.host, settings.broker.health_port)
    run()


@app.command("rotate-keys")
def rotate_keys(
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per transaction.")] = 500,
) -> None:
    """Re-encrypt every encrypted column under the newest key of ENCRYPTION_KEYS (idempotent)."""
    configure_logging("rotate-keys")
    from libs.common.key_rotation import TableReport, rotate_all

    def progress(table: str, report: TableReport) -> None:
        typer.echo(f"{table:<20} rows {report.rows:>8}  rotated {report.rotated:>8}  already current "
                   f"{report.current:>8}  unreadable {report.unreadable:>6}  changed meanwhile "
                   f"{report.changed_meanwhile:>4}")

    report = rotate_all(batch=batch, progress=progress)
    typer.echo(f"rotated {report.rotated} value(s) to the newest key")
    if report.unreadable:
        typer.echo(f"{report.unreadable} value(s) could not be decrypted with any configured key: "
                   "keep the key that sealed them in ENCRYPTION_KEYS", err=True)
        raise typer.Exit(1)


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
    """Search the indexed repositories.

    Filters, in any order beside the words: repo:NAME, path:GLOB (src/**/*.py; -path: excludes),
    lang:NAME, sym:NAME (Class.method, * wildcards), re:PATTERN or /PATTERN/ (a regular expression,
    ripgrep syntax), case:yes. Quote values with spaces: path:"my docs/*.md".
    """
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



api_key_app = typer.Typer(help="API keys of the admin API (everything under /api/v1).", no_args_is_help=True)
app.add_typer(api_key_app, name="api-key")


@api_key_app.command("create")
def api_key_create(name: Annotated[str, typer.Argument(help="A name for the key (who or what uses it).")]) -> None:
    """Create a key and print it (once: only its hash is stored)."""
    configure_logging("api-key")
    from libs.common.api_keys import ApiKeyError, create_key
    from libs.common.schema import migrate as run_migrations

    run_migrations()
    try:
        token = create_key(name)
    except ApiKeyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(token)
    typer.echo(f"API key {name!r} created; it is shown only now. Send it as `Authorization: Bearer <key>` "
               "or `X-API-Key: <key>`.", err=True)


@api_key_app.command("revoke")
def api_key_revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    configure_logging("api-key")
    from libs.common.api_keys import revoke_key
    from libs.common.schema import migrate as run_migrations

    run_migrations()
    if not revoke_key(name):
        typer.echo(f"no active API key named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"API key {name!r} revoked")


@api_key_app.command("list")
def api_key_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Also list revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The keys, without their secrets: name, public prefix, created, last used, revoked."""
    configure_logging("api-key")
    from libs.common.api_keys import describe, list_keys
    from libs.common.schema import migrate as run_migrations

    run_migrations()
    rows = [describe(key) for key in list_keys(include_revoked=include_revoked)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no API keys (create one with `repotalk api-key create NAME`)")
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        typer.echo(f"{row['name']:<24} {row['prefix']:<22} created {row['created_at']}  "
                   f"last used {row['last_used_at'] or 'never'}  {state}")


allow_list_app = typer.Typer(
    help="The allow-list (ALLOW_LIST): who may use the assistant. Numbers are kept only as keyed hashes.",
    no_args_is_help=True,
)
app.add_typer(allow_list_app, name="allow-list")


@allow_list_app.command("hash")
def allow_list_hash(number: Annotated[str, typer.Argument(help="A WhatsApp number, +E164.")]) -> None:
    """Print the id to put in ALLOWED_NUMBERS instead of the number itself (it depends on SECRET_KEY)."""
    from services.gateway.access import hashed_id

    typer.echo(hashed_id(number))


@allow_list_app.command("add")
def allow_list_add(number: Annotated[str, typer.Argument(help="A WhatsApp number, +E164.")]) -> None:
    """Admit a number (as a valid invite code would); only its keyed hash is stored."""
    configure_logging("allow-list")
    from libs.common.schema import migrate as run_migrations
    from services.gateway.access import add_user

    run_migrations()
    typer.echo(f"admitted {add_user(number)}")


@allow_list_app.command("remove")
def allow_list_remove(
    number: Annotated[str, typer.Argument(help="A WhatsApp number (+E164) or its `u_…` id.")],
) -> None:
    """Withdraw an admission (running gateways notice within a minute). Configured ALLOWED_NUMBERS stay."""
    configure_logging("allow-list")
    from libs.common.schema import migrate as run_migrations
    from services.gateway.access import remove_user

    run_migrations()
    if not remove_user(number):
        typer.echo("not admitted (numbers in ALLOWED_NUMBERS are changed in the settings)", err=True)
        raise typer.Exit(1)
    typer.echo("admission withdrawn")
