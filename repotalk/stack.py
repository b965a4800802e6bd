"""The distributed stack as separate local processes: the gateway and one Celery worker per service,
against the local Redis and Postgres. Used by `make dev-local`, the distributed tests and bench/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> Proc:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.run_dir / f"{name}.log"
        env = {**os.environ, **self.env, "REPOTALK_RUN_DIR": str(self.run_dir), "PORT": str(self.port)}
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "repotalk", *args], env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        proc = Proc(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def start_worker(self, service: Service) -> Proc:
        _ready_file(self.run_dir, service.value).unlink(missing_ok=True)
        return self._spawn(service.value, ["worker", service.value])

    def start(self, timeout: float = 60.0) -> None:
        for service in self.services:
            self.start_worker(service)
        if self.gateway:
            self._spawn(HTTP, ["gateway"])
        self.wait_ready(timeout)

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
