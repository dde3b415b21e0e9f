"""Hand-off latency in the local emulator: from the yielding hop's ``continued`` checkpoint
write to the next hop's claim (its first item follows within a few ms).

Runs ``examples/emulator/app.py:handler`` through ``longrun local`` (real awslambdaric
processes, a real Invoke endpoint, file checkpoints) with a 5 s timeout and no Fargate, and
takes the medians over the hand-offs of the run, apart for the hops that landed on a warm
execution environment (the process of an earlier hop, kept as Lambda keeps it: modules
imported, clients made) and on a cold one (a new process: its start and the boto3 import for
the claim). In a self-invoking chain the first hand-off is cold (the sending hop's environment
is still busy), the later ones alternate between two warm environments. ``--quick`` runs a
shorter job.

    python bench/handoff_latency.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    cold_by_hop = {
        i["hop"]: i["cold"]
        for i in report["invocations"]
        if i["run_id"] == run["run_id"] and i["where"] == "lambda" and i["outcome"] != "duplicate"
    }
    warm = [h["ms"] for h in handoffs if cold_by_hop.get(h["to_hop"]) is False]
    cold = [h["ms"] for h in handoffs if cold_by_hop.get(h["to_hop"]) is True]
    row = {
        "name": "handoff_latency",
        "median_ms": run["handoff_median_ms"],
        "warm_median_ms": statistics.median(warm) if warm else None,
        "cold_median_ms": statistics.median(cold) if cold else None,
        "warm_handoffs": len(warm),
        "cold_handoffs": len(cold),
        "handoffs": len(handoffs),
        "status": run["status"],
        "conditions": (
            f"longrun local, examples/emulator job of {event['records']} records, timeout 5 s, "
            f"{len(handoffs)} hand-offs ({len(warm)} to a warm environment, {len(cold)} to a "
            "cold one), continued write -> next hop's claim"
        ),
    }
    print(
        f"hand-off latency: median {row['median_ms']} ms over {row['handoffs']} hand-offs; "
        f"warm {row['warm_median_ms']} ms ({len(warm)}), cold {row['cold_median_ms']} ms "
        f"({len(cold)})"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
