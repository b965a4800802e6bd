"""Redis and PostgreSQL servers of a test's own, so faults (a crash, a restart) touch nobody else's."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from tests.e2e.support import free_port, wait_until

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/usr/bin"))


class PrivateRedis:
    """A Redis without persistence, like the machine's: a restart loses everything queued in it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pings(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self.pings, 10, "private redis")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, a developer usually does not.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def private_postgres_available() -> str | None:
    """Why a private PostgreSQL cannot be started here, or None when it can."""
    if not (PG_BIN / "initdb").exists():
        return f"no initdb under {PG_BIN}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser"
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port; ``crash()`` stops it the way a kill -9 would."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp dirs: those are private to the current user, and the server runs as postgres.
        self.workdir = Path(tempfile.mkdtemp(prefix="repotalk-pg-"))
        self.workdir.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        self.data = self.workdir / "data"
        subprocess.run(
            [*_as_postgres_user(), str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*_as_postgres_user(), str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._ctl("-o", options, "-l", str(self.workdir / "server.log"), "-w", "start")

    def crash(self) -> None:
        """Immediate shutdown: connections drop mid-transaction, recovery runs at the next start."""
        self._ctl("-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self._ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)
