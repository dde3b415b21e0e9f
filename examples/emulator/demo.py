"""Demo: a job longer than its Lambda timeout, on the local emulator, verified at the end.

2,000 generated records are transformed in batches of 50 (about 20 seconds of work) by
``app.handler`` under a 5-second Lambda timeout, each invocation a real ``awslambdaric``
process killed at its deadline. After ``--max-hops`` re-invocations the run escalates to
"Fargate": a task in a local moto ECS, run as a local ``longrun-runner`` process. No AWS
account, no Docker, no network.

The same run from the command line::

    longrun local examples/emulator/app.py:handler --event examples/emulator/event.json \\
        --timeout 5 --max-hops 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--work", type=float, default=0.5, help="seconds of work per batch")
    parser.add_argument("--timeout", type=float, default=5.0, help="Lambda timeout, seconds")
    parser.add_argument("--max-hops", type=int, default=3)
    parser.add_argument("--store", help="s3://BUCKET/PREFIX/ (local moto); default: a directory")
    args = parser.parse_args(argv)

    import job

    from longrun.testing.emulator import LocalLambda

    workdir = Path(tempfile.mkdtemp(prefix="longrun-demo-"))
    out, journal = workdir / "out", workdir / "journal.txt"
    event: dict[str, Any] = {
        "records": args.records,
        "batch": args.batch,
        "work_s": args.work,
        "out": str(out),
    }
    print(
        f"{args.records} records in batches of {args.batch} (~{args.work:g}s each), Lambda "
        f"timeout {args.timeout:g}s, {args.max_hops} re-invocation(s), then Fargate\n"
    )

    def timed_out(line: str) -> None:
        if "Task timed out" in line or line.startswith("emulator:"):
            print(line, flush=True)

    started = time.monotonic()
    with LocalLambda(
        workdir=workdir, on_record=lambda r: print(r.line(), flush=True), log=timed_out
    ) as emulator:
        function = emulator.deploy(
            str(HERE / "app.py") + ":handler",
            timeout_s=args.timeout,
            max_hops=args.max_hops,
            store=args.store,
            env={"JOB_JOURNAL": str(journal)},
        )
        run_id = emulator.invoke(function, event)
        report = emulator.wait(timeout=600)
    run = report.run(run_id)
    print()
    for line in run.lines():
        print(line)

    expected = job.expected(event)
    batches = sorted(out.glob("batch-*.txt"))
    done = [int(line.split()[1]) for line in journal.read_text().splitlines() if line[:4] == "item"]
    problems = []
    if run.status != "completed" or run.result != expected:
        problems.append(f"result {run.result} (status {run.status}), expected {expected}")
    if len(batches) != expected["batches"]:
        problems.append(f"{len(batches)} output files, expected {expected['batches']}")
    if sorted(set(done)) != list(range(0, args.records, args.batch)):
        problems.append("some batches were never done")
    for path in batches:
        start = int(path.stem.split("-")[1])
        lines = path.read_text().split()
        stop = min(start + args.batch, args.records)
        if lines != [job.transform(job.record(i)) for i in range(start, stop)]:
            problems.append(f"{path.name} has the wrong content")
    if problems:
        print("\nNOT verified:\n  " + "\n  ".join(problems))
        return 1
    lambda_handoffs = [h.ms for h in run.handoffs if h.via == "lambda"]
    redone = len(done) - len(set(done))
    print(
        f"\nverified: {expected['records']} records in {expected['batches']} batches, digest "
        f"{expected['digest']}, {redone} batch(es) done twice; "
        f"{run.lambda_hops} Lambda hop(s) + {run.fargate_hops} Fargate task(s) in "
        f"{time.monotonic() - started:.1f}s"
    )
    if lambda_handoffs:
        print(
            f"hand-off (continued checkpoint -> next hop's claim): median "
            f"{statistics.median(lambda_handoffs):.0f} ms over {len(lambda_handoffs)}"
        )
    print(f"checkpoints and output under {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
