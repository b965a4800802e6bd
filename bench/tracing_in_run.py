"""bench/tracing_in_run: what a traced turn's spans cost, beside untraced turns of the same run.

Runs bench/webhook once with tracing on and half the turns sampled (TRACE_SAMPLE_RATIO 0.5, no cap), with a probe
in every worker (bench/span_probe) that times each bus event's handler in thread CPU, apart for sampled and
unsampled turns, and the span export thread. Both halves run on the same machine at the same moments, so its drift
(which moves this machine's speed by more than tracing costs, see bench/tracing_cost) cancels out: the difference is
what the spans cost, per service and per turn, beside the CPU a message costs untraced.

Not measured here: the HTTP gateway (its server span and the outbox relay's publish) and the floor that
instrumentation costs with nothing sampled (bench/tracing_cost --paired --sampled-out measures that one).

--calls also times each tracing call a turn makes in the workers (a span's start and end, a context's attach and
detach, a traceparent read and written, a latency observation with its exemplar) and prints its thread CPU a call:
what a call costs among a turn's other work on a busy machine, which is several times what the same call costs in a
tight loop. The probe's own reads are taken out of those figures, but the wrapping still slows the handlers, so the
table above them is read from a run without --calls.

    .venv/bin/python bench/tracing_in_run.py [--rate 260] [--seconds 15] [--calls]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Row, print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=260.0, help="webhooks per second offered")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the load lasts")
    parser.add_argument("--calls", action="store_true",
                        help="also time each tracing call in the workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        figures_path = Path(tmp) / "figures.json"
        env = {**os.environ, "REPOTALK_SPAN_PROBE_DIR": tmp,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench" / "span_probe"),
                                                           os.environ.get("PYTHONPATH", "")]))}
        if args.calls:
            env["REPOTALK_SPAN_PROBE_CALLS"] = "1"
        command = [sys.executable, str(ROOT / "bench" / "webhook.py"), "--rate", str(args.rate), "--seconds",
                   str(args.seconds), "--tracing", "otlp", "--max-per-second", "0", "--sample-ratio", "0.5",
                   "--json", str(figures_path)]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not figures_path.exists():
            raise SystemExit(f"bench/webhook failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        figures = json.loads(figures_path.read_text())
        probes = [json.loads(path.read_text()) for path in Path(tmp).glob("*.*.json") if path != figures_path]

    by_service = {p["service"]: p["totals"] for p in probes if "sampled" in p["totals"]}
    if "gateway" not in by_service:
        raise SystemExit("no probe figures from the gateway worker (one handler call a turn): nothing to compare")
    turns = sum(by_service["gateway"][kind][0] for kind in ("sampled", "unsampled"))
    sampled_turns = by_service["gateway"]["sampled"][0]
    rows = []
    span_cost = untraced = 0.0
    print("per service: handler thread CPU per event, sampled against unsampled turns of the same run")
    for service, totals in sorted(by_service.items()):
        sampled_calls, sampled_seconds = totals["sampled"]
        unsampled_calls, unsampled_seconds = totals["unsampled"]
        sampled_us = sampled_seconds / sampled_calls * 1e6
        unsampled_us = unsampled_seconds / unsampled_calls * 1e6
        per_turn = (sampled_calls + unsampled_calls) / turns  # events a turn brings this service
        export_us = totals.get("export", [0, 0.0])[1] / sampled_turns * 1e6
        span_cost += (sampled_us - unsampled_us) * per_turn + export_us
        untraced += unsampled_us * per_turn
        print(f"  {service:<12} sampled {sampled_us:7.1f} us  unsampled {unsampled_us:7.1f} us  "
              f"spans {sampled_us - unsampled_us:6.1f} us an event ({per_turn:.1f} a turn)  "
              f"export {export_us:6.1f} us a traced turn")
    cpu_ms = figures["cpu_ms_per_message"]
    # The run's CPU a message had the sampled share of its turns traced: without them, it would have been this.
    untraced_cpu_ms = cpu_ms - span_cost * sampled_turns / turns / 1000
    rows.append(Row("workers' handlers a turn, traced (us)", untraced + span_cost, untraced, "us", is_goal=False))
    rows.append(Row("all services' CPU a message, every turn traced (ms)", untraced_cpu_ms + span_cost / 1000,
                    untraced_cpu_ms, "ms", is_goal=False))
    print_table(f"bench/tracing_in_run — bench/webhook --rate {args.rate:g} --seconds {args.seconds:g}, half the "
                f"turns traced, {turns} turns", rows, "untraced")
    print(f"\nspans of a traced turn: {span_cost:.0f} us of CPU (workers' handlers and export threads; not the "
          f"HTTP gateway's), {span_cost / 1000 / untraced_cpu_ms:.1%} more CPU a message with every turn traced.\n"
          "That is the spans alone: the throughput cost at saturation (the goal: under 10 %) also holds the HTTP "
          "gateway's spans, the no-sampling floor and the stack batching less as it slows; bench/tracing_cost "
          "--paired measures it.")
    if args.calls:
        print_calls(probes)


def print_calls(probes: list[dict[str, Any]]) -> None:
    """Each tracing call's thread CPU a call in the workers, the probe's own reads taken out."""
    in_run: dict[str, list[float]] = {}
    for probe in probes:
        overhead = probe["totals"].get("probe", [0, 0.0])
        per_read_pair = overhead[1] / overhead[0] if overhead[0] else 0.0
        for kind, (calls, seconds) in probe["totals"].items():
            if kind.startswith("call:"):
                found = in_run.setdefault(kind[5:], [0, 0.0])
                found[0] += calls
                found[1] += seconds - calls * per_read_pair
    print("\ntracing calls in the workers, sampled turns and not: thread CPU a call")
    for name, (calls, seconds) in sorted(in_run.items()):
        print(f"  {name:<22} {calls:>8} calls {seconds / calls * 1e6:>8.1f} us")


if __name__ == "__main__":
    main()
