"""Example job for the local emulator: transform generated records in batches.

Each batch of records is transformed (a SHA-256 of each record stands in for real work, plus
``work_s`` seconds of sleep per batch) and, if ``out`` is given, written to
``out/batch-NNNNNN.txt``: a deterministic name, so a batch done twice after a kill writes the
same file again. The result carries a digest of every transformed record, so a run can be
verified against ``job.expected(event)`` whatever hops, kills and retries it went through.

Event: ``{"records": 2000, "batch": 50, "work_s": 0.5, "out": "/tmp/out"}``.

Configuration comes from the environment, as for a deployed function
(``LONGRUN_CHECKPOINT_URI``, ``LONGRUN_MAX_HOPS``, ``LONGRUN_FARGATE_*``). With
``JOB_JOURNAL=path`` every finished batch appends one line to that file (flushed and fsynced
before the batch counts as finished), so tests can count what every process did.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import crashhook
from job import batch_digest, record, transform

from longrun import current_run, longrun

JOURNAL = os.environ.get("JOB_JOURNAL")


def journal(line: str) -> None:
    if not JOURNAL:
        return
    with open(JOURNAL, "a") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


def _write_batch(out: Path, start: int, lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"batch-{start:06d}.txt"
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, target)


def _do_batch(event: dict[str, Any], start: int) -> tuple[int, int]:
    n, size = int(event["records"]), int(event.get("batch", 50))
    stop = min(start + size, n)
    lines = [transform(record(i)) for i in range(start, stop)]
    time.sleep(float(event.get("work_s", 0.0)))
    if event.get("out"):
        _write_batch(Path(event["out"]), start, lines)
    return stop - start, batch_digest(start, stop)


def _where(context: Any) -> str:
    return str(getattr(context, "longrun_where", "lambda"))


@longrun(lambda_client=crashhook.lambda_client())  # None (the default) unless a test hooks it
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    run = current_run()
    where, request_id = _where(context), context.aws_request_id
    journal(
        f"enter {run.hop} {where} {request_id} {context.get_remaining_time_in_millis()} "
        f"{int(time.time() * 1000)} {os.getpid()}"
    )
    n, size = int(event["records"]), int(event.get("batch", 50))
    for start in run.iterate(range(0, n, size), name="batches"):
        count, digest = _do_batch(event, start)
        run.state["records"] = run.state.get("records", 0) + count
        run.state["digest"] = run.state.get("digest", 0) ^ digest
        journal(
            f"item {start} {run.hop} {where} {request_id} {int(time.time() * 1000)} {os.getpid()}"
        )
    return {
        "records": run.state.get("records", 0),
        "batches": len(range(0, n, size)),
        "digest": f"{run.state.get('digest', 0):016x}",
    }


@longrun
def stubborn_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The same job written without looking at the time: it never yields, so Lambda kills it
    at every timeout. It saves its progress every ``checkpoint_every`` batches."""
    run = current_run()
    where, request_id = _where(context), context.aws_request_id
    journal(f"enter {run.hop} {where} {request_id} 0 {int(time.time() * 1000)} {os.getpid()}")
    n, size = int(event["records"]), int(event.get("batch", 50))
    every = int(event.get("checkpoint_every", 2))
    while run.state.get("next", 0) < n:
        start = run.state.get("next", 0)
        count, digest = _do_batch(event, start)
        run.state["records"] = run.state.get("records", 0) + count
        run.state["digest"] = run.state.get("digest", 0) ^ digest
        run.state["next"] = start + size
        journal(
            f"item {start} {run.hop} {where} {request_id} {int(time.time() * 1000)} {os.getpid()}"
        )
        if (start // size + 1) % every == 0:
            run.checkpoint()
    return {
        "records": run.state.get("records", 0),
        "batches": len(range(0, n, size)),
        "digest": f"{run.state.get('digest', 0):016x}",
    }
