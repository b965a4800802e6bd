"""bench/load: bench/webhook held for minutes — sustained end-to-end throughput of the distributed stack
with the offline answerer, webhook ack and end-to-end latency p50/p95/p99, zero loss, and every process's
RSS sampled through the run with its trend (growth in MB per minute over the second half).

Goals on 2 cores: at least 200 answered messages/s, end-to-end p95 at most 150 ms (no LLM time: the
offline answerer), every process under 150 MB RSS, no growth trend, nothing lost or duplicated. The
offered rate defaults to 210/s: a little over the goal, as the answered rate can only show the goal met when
more than it is offered (it counts to the last reply), and one the stack sustains here (a rate above capacity
measures a growing backlog, not latency); raise it with --rate to see where it saturates.

    .venv/bin/python bench/load.py [--rate 210] [--seconds 240] [--rss-every 20]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.webhook import build_parser, run  # noqa: E402


def main() -> None:
    parser = build_parser(__doc__ or "")
    parser.set_defaults(rate=210.0, seconds=240.0, rss_every=20.0, drain=300.0, users=100_000)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
