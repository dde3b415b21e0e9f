"""Hand-off latency in the local emulator: from the yielding hop's ``continued`` checkpoint
write to the next hop's claim (its first item follows within a few ms).

Runs ``examples/emulator/app.py:handler`` through ``longrun local`` (real awslambdaric
processes, a real Invoke endpoint, file checkpoints) with a 5 s timeout and no Fargate, and
takes the median over every hand-off of the run. A hop here is a cold start: each invocation
is a new process, so the figure includes the new process's start and the boto3 import for the
claim. ``--quick`` runs a shorter job.

    python bench/handoff_latency.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    event = {"records": 800 if args.quick else 2000, "batch": 50, "work_s": 0.5}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "longrun.cli",
            "local",
            "app.py:handler",
            "--event",
            "-",
            "--timeout",
            "5",
            "--max-hops",
            "40",
            "--no-fargate",
            "--json",
        ],
        cwd=ROOT / "examples" / "emulator",
        input=json.dumps(event),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise SystemExit(f"longrun local failed ({out.returncode}):\n{out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    [run] = report["runs"]
    handoffs = run["handoffs"]
    row = {
        "name": "handoff_latency",
        "median_ms": run["handoff_median_ms"],
        "handoffs": len(handoffs),
        "status": run["status"],
        "conditions": (
            f"longrun local, examples/emulator job of {event['records']} records, timeout 5 s, "
            f"{len(handoffs)} hand-offs, continued write -> next hop's claim, cold process per hop"
        ),
    }
    print(f"hand-off latency: median {row['median_ms']} ms over {row['handoffs']} hand-offs")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
