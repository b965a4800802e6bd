"""bench/faults: faults under load in the distributed stack (gateway + one worker per service as processes,
on a private Redis and PostgreSQL, fake Twilio, a fake OpenAI-compatible model server).

Steady signed webhooks at --rate; for each fault in turn: traffic for --lead seconds, the fault (a
SIGKILLed process is restarted after 1 s, Redis after 2 s with everything queued in it lost, PostgreSQL
crashed and restarted after 2 s, the model failing or slower than its timeout for 5 s), --tail seconds
more, then every accepted message's reply awaited. A webhook refused during a fault is re-sent with the
same MessageSid every 0.5 s (Twilio's retry / fallback URL). Prints per fault: sent, accepted, retried,
answered, lost, duplicated, recovery (fault start -> the last message sent during it is answered) and
end-to-end p95, beside the no-fault phase of the same run.

    .venv/bin/python bench/faults.py [--rate 20] [--lead 3] [--tail 5] [--only "restart redis (queues lost)"]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.faultload import FaultBench, FaultResult  # noqa: E402


def _row(result: FaultResult, baseline: FaultResult | None) -> str:
    ratio = ""
    if baseline is not None and baseline.recovery_s == baseline.recovery_s and baseline.recovery_s > 0:
        ratio = f"{result.recovery_s / baseline.recovery_s:6.1f}x"
    verdict = "ok" if result.lost == 0 and result.duplicated == 0 and result.accepted == result.sent else "FAIL"
    return (f"{result.fault:<34} {result.sent:5d} {result.accepted:8d} {result.retried:7d} {result.answered:8d} "
            f"{result.lost:4d} {result.duplicated:5d} {result.recovery_s:10.1f} {ratio:>7} {result.e2e_p95_ms:9.0f}"
            f"  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="webhooks per second offered throughout")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds of traffic before each fault")
    parser.add_argument("--tail", type=float, default=5.0, help="seconds of traffic after the part is back")
    parser.add_argument("--redrive-after", type=float, default=5.0, help="TURN_REDRIVE_AFTER of the stack")
    parser.add_argument("--visibility-timeout", type=float, default=8.0, help="BROKER_VISIBILITY_TIMEOUT")
    parser.add_argument("--only", action="append", help="run only this fault (repeatable)")
    args = parser.parse_args()

    with FaultBench(rate=args.rate, lead=args.lead, tail=args.tail, redrive_after=args.redrive_after,
                    visibility_timeout=args.visibility_timeout) as bench:
        names = ["none", *(args.only or [name for name in bench.faults() if name != "none"])]
        print(f"stack up; {args.rate:.0f} webhooks/s; visibility timeout {args.visibility_timeout:.0f} s, "
              f"re-drive after {args.redrive_after:.0f} s\n")
        header = (f"{'fault':<34} {'sent':>5} {'accepted':>8} {'retried':>7} {'answered':>8} {'lost':>4} "
                  f"{'dup':>5} {'recovery s':>10} {'vs none':>7} {'e2e p95':>9}")
        print(header)
        print("-" * len(header))
        baseline: FaultResult | None = None
        results = []
        for name in names:
            result = bench.run(name)
            results.append(result)
            print(_row(result, baseline), flush=True)
            if name == "none":
                baseline = result
        restarts = ", ".join(f"{name} {count}" for name, count in sorted(bench.stack.restarts.items()))
        print(f"\nprocesses the supervisor started again (killed ones included): {restarts or 'none'}")
    total_lost = sum(r.lost for r in results)
    total_dup = sum(r.duplicated for r in results)
    print(f"\nall faults: {sum(r.sent for r in results)} sent, {sum(r.answered for r in results)} answered, "
          f"{total_lost} lost, {total_dup} duplicated (goal: 0 and 0)")
    print("'recovery' of the no-fault row is the ordinary reply time of the messages sent in the same window.")


if __name__ == "__main__":
    main()
