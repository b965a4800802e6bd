"""Shared pieces of the benchmarks: a throwaway Postgres database and Redis prefix, percentiles, RSS,
and the side-by-side table every benchmark prints."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psycopg
import redis

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    name = f"repotalk_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_ADMIN.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_redis_prefix() -> Iterator[str]:
    prefix = f"repotalk-bench-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)
        client.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


@dataclass
class Row:
    metric: str
    measured: float
    baseline: float | None
    unit: str
    higher_is_better: bool = False
    # False when the baseline is a reference to compare with (a bare tool), not a goal to meet.
    is_goal: bool = True

    def ratio(self) -> str:
        if self.baseline in (None, 0) or math.isnan(self.measured):
            return ""
        assert self.baseline is not None
        return f"{self.measured / self.baseline:.2f}x"

    def verdict(self) -> str:
        if self.baseline is None or math.isnan(self.measured) or not self.is_goal:
            return ""
        ok = self.measured >= self.baseline if self.higher_is_better else self.measured <= self.baseline
        return "meets" if ok else "MISSES"


def print_table(title: str, rows: Sequence[Row], baseline_label: str) -> None:
    print(f"\n{title}")
    header = f"{'metric':<34} {'measured':>12} {baseline_label:>12} {'ratio':>8}  verdict"
    print(header)
    print("-" * len(header))
    def figure(value: float) -> str:
        return f"{value:,.3f}" if 0 < abs(value) < 1 else f"{value:,.1f}"  # sub-millisecond CPU costs

    for row in rows:
        base = "" if row.baseline is None else figure(row.baseline)
        print(f"{row.metric:<34} {figure(row.measured):>12} {base:>12} {row.ratio():>8}  {row.verdict()}")


@dataclass
class Offered:
    """What an open-loop run sent: ack latencies (ms), refusals, when each request went out, which got 200."""

    acks: list[float]
    refused: int
    sent: list[float]
    ok: list[bool]


async def offer_requests(host: str, port: int, requests: list[bytes], rate: float,
                         max_connections: int = 64) -> Offered:
    """Send ``requests`` open-loop at ``rate``/s over keep-alive connections.

    A bare asyncio HTTP/1.1 client: an HTTP library costs milliseconds of CPU per request, which on two
    cores would slow the server it measures.
    """
    acks: list[float] = []
    sent: list[float] = [math.nan] * len(requests)
    ok: list[bool] = [False] * len(requests)
    refused = 0
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    slots = asyncio.Semaphore(max_connections)

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
        writer.write(request)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("closed by the server")
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        return int(status_line.split()[1])

    async def one(index: int, request: bytes) -> None:
        nonlocal refused
        async with slots:
            t0 = time.monotonic()
            sent[index] = t0
            status = 0
            # A kept-alive connection the server closed meanwhile (uvicorn's keep-alive timeout) is
            # replaced once, as HTTP clients do.
            for attempt in range(2):
                reader, writer = idle.pop() if idle and attempt == 0 else await asyncio.open_connection(host, port)
                try:
                    status = await exchange(reader, writer, request)
                    break
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    writer.close()
                    if attempt:
                        print(f"request failed: {type(exc).__name__}: {exc}")
            else:
                refused += 1
                return
            acks.append((time.monotonic() - t0) * 1000)
            idle.append((reader, writer))
        if status != 200:
            print(f"answered {status}")
            refused += 1
        else:
            ok[index] = True

    t_start = time.monotonic()
    tasks = []
    for n, request in enumerate(requests):
        delay = t_start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, request)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return Offered(acks, refused, sent, ok)
