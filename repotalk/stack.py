"""The distributed stack as separate local processes: the gateway and one Celery worker per service,
against the local Redis and Postgres. Used by `make dev-local`, the distributed tests and bench/."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from libs.common.events import Service


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


# The gateway's HTTP process; "gateway" names its Celery worker (the reply sender), like every service.
HTTP = "http"


def _ready_file(run_dir: Path, service: str) -> Path:
    return run_dir / f"{service}.ready"


@dataclass
class Stack:
    env: Mapping[str, str]
    run_dir: Path
    port: int = 8000
    services: Sequence[Service] = tuple(Service)
    gateway: bool = True
    procs: dict[str, Proc] = field(default_factory=dict)
    # Settings of one process only, by name ("http" or a service), e.g. each worker's WORKER_HEALTH_PORT.
    process_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Restart a process that exits, after ``restart_delay`` seconds, as compose's `restart: unless-stopped`
    # and Kubernetes do (Celery exits on a broker error it cannot recover from in-process).
    supervise: bool = False
    restart_delay: float = 1.0
    # code_search's HTTP API, which the gateway forwards /api/v1/search, /api/v1/repos and /webhooks/git
    # to (as compose and Kubernetes wire it): None picks a free port, 0 leaves it to ``env``.
    code_search_port: int | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    replicas: dict[str, Service] = field(default_factory=dict)  # extra workers by name (start_replica)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _supervisor: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> Proc:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.run_dir / f"{name}.log"
        env = {**os.environ, **self.env, **self._wiring(name), **self.process_env.get(name, {}),
               "REPOTALK_RUN_DIR": str(self.run_dir), "PORT": str(self.port)}
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "repotalk", *args], env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        proc = Proc(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def _wiring(self, name: str) -> dict[str, str]:
        if "CODE_SEARCH_URL" in self.env or self.code_search_port == 0:
            return {}
        if self.code_search_port is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.code_search_port = int(probe.getsockname()[1])
        if name == Service.CODE_SEARCH.value:
            return {"CODE_SEARCH_PORT": str(self.code_search_port)}
        if name == HTTP:
            return {"CODE_SEARCH_URL": f"http://127.0.0.1:{self.code_search_port}"}
        return {}

    def start_worker(self, service: Service) -> Proc:
        _ready_file(self.run_dir, service.value).unlink(missing_ok=True)
        return self._spawn(service.value, ["worker", service.value])

    def start_replica(self, service: Service, name: str, env: Mapping[str, str], timeout: float = 60.0) -> Proc:
        """Another worker of ``service`` as its own process named ``name`` (``env``: its own settings,
        e.g. INDEX_DIR), as a second pod of a Deployment; returns once its /health answers on
        ``env["WORKER_HEALTH_PORT"]`` (required: the ready file is per service, not per replica)."""
        port = int(env["WORKER_HEALTH_PORT"])
        self.process_env = {**self.process_env, name: {**env}}
        self.replicas[name] = service
        proc = self._spawn(name, ["worker", service.value])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{name} exited early:\n{self.tail(name)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} is not up in {timeout:.0f} s:\n{self.tail(name)}")

    def start(self, timeout: float = 60.0) -> None:
        for service in self.services:
            self.start_worker(service)
        if self.gateway:
            self._spawn(HTTP, ["gateway"])
        self.wait_ready(timeout)
        if self.supervise and self._supervisor is None:
            self._stopping.clear()
            self._supervisor = threading.Thread(target=self._supervise, name="stack-supervisor", daemon=True)
            self._supervisor.start()

    def _supervise(self) -> None:
        exited_at: dict[str, float] = {}
        while not self._stopping.wait(0.2):
            for name, proc in list(self.procs.items()):
                if proc.alive():
                    exited_at.pop(name, None)
                    continue
                since = exited_at.setdefault(name, time.monotonic())
                if time.monotonic() - since < self.restart_delay or self._stopping.is_set():
                    continue
                exited_at.pop(name, None)
                if name == HTTP:
                    self._spawn(HTTP, ["gateway"])
                elif name in self.replicas:
                    self._spawn(name, ["worker", self.replicas[name].value])
                else:
                    self.start_worker(Service(name))
                # Counted once the new process is in ``procs``: waiters then see it, not the dead one.
                self.restarts[name] = self.restarts.get(name, 0) + 1

    def wait_http(self, timeout: float = 60.0) -> None:
        """Until the HTTP gateway answers /ready."""
        self._wait_http(time.monotonic() + timeout)

    def wait_ready(self, timeout: float = 60.0, services: Sequence[Service] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = {s.value for s in (services if services is not None else self.services)}
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                if not self.procs[name].alive():
                    raise RuntimeError(f"{name} exited early:\n{self.tail(name)}")
                if _ready_file(self.run_dir, name).exists():
                    pending.discard(name)
            time.sleep(0.05)
        if pending:
            raise RuntimeError(f"not ready in {timeout:.0f} s: {sorted(pending)}")
        if self.gateway and services is None:
            self._wait_http(deadline)

    def _wait_http(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self.procs[HTTP].alive():
                raise RuntimeError(f"the HTTP gateway exited early:\n{self.tail(HTTP)}")
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the HTTP gateway is not ready:\n{self.tail(HTTP)}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.alive():
            os.killpg(proc.pid, sig)
            proc.popen.wait(timeout=30)

    def restart_worker(self, service: Service, timeout: float = 60.0) -> None:
        self.kill(service.value)
        self.start_worker(service)
        self.wait_ready(timeout, services=[service])

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.procs[name].log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        for proc in self.procs.values():
            if proc.alive():
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait(timeout=5)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
