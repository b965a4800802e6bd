"""`make dev-local`: the distributed stack as local processes (gateway + one worker per service) over
the local Redis and Postgres, with the repository indexed first. Ctrl-C stops everything."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from libs.common.settings import get_settings
from repotalk.stack import Stack


def ensure_database(url: str) -> None:
    """Create the Postgres database named by url if it does not exist yet."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        return
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{parsed.database}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    settings = get_settings()
    ensure_database(settings.database_url)
    repotalk = [sys.executable, "-m", "repotalk"]
    subprocess.run([*repotalk, "migrate"], check=True)
    index_cmd = [*repotalk, "index", args.repo] + (["--name", args.name] if args.name else [])
    subprocess.run(index_cmd, check=True)
    run_dir = Path(settings.app.data_dir) / "run"
    # Supervised like compose's `restart: unless-stopped`: a process that exits is started again.
    stack = Stack(env=dict(os.environ), run_dir=run_dir, port=settings.app.port, supervise=True)
    stack.start()
    print(f"repotalk (distributed) is running at {stack.base_url}; logs in {run_dir}/")
    print('  try: .venv/bin/repotalk ask "where is the webhook signature verified?"')
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    restarts: dict[str, int] = {}
    try:
        while not stopping:
            for name, count in list(stack.restarts.items()):
                if restarts.get(name) != count:
                    restarts[name] = count
                    print(f"{name} exited and was restarted ({count}x); its log: {run_dir}/{name}.log",
                          file=sys.stderr)
            time.sleep(0.5)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
