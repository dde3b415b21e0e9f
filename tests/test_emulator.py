"""The process-level emulator, end to end: real ``awslambdaric`` processes, real kills.

Every test runs the example job of ``examples/emulator/`` (``app.handler`` or the
``stubborn_handler`` that never yields) through :class:`~longrun.testing.emulator.LocalLambda`
(the ``longrun_local`` fixture) and asserts, from what the real components hold at the end:

* the result is right (``job.expected(event)``: a digest of every transformed record);
* no item is lost: every batch is in the job's journal (one fsynced line per finished batch,
  written by whichever process did it);
* an item is done more than once only inside the window of an invocation that died or failed
  after its last checkpoint: the items it finished after that checkpoint. That window is
  measured (the kill time minus the checkpoint's ``updated_ms`` of its last write, or the hop
  entry's ``items``) and printed as a ``FIGURE`` line (run pytest with ``-s`` to see them).

Timeouts are 1.2 to 2.5 seconds and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from longrun.testing.emulator import (
    FunctionError,
    InvocationRecord,
    LocalLambda,
    Report,
    RunSummary,
)
from longrun.testing.fault_proxy import FaultProxy
from longrun.testing.runtime_api import RuntimeApi

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "emulator"
APP = f"{EXAMPLE / 'app.py'}:handler"
STUBBORN = f"{EXAMPLE / 'app.py'}:stubborn_handler"
sys.path.insert(0, str(EXAMPLE))
import job  # noqa: E402  (the example's pure part: records, transform, expected result)

# Short timeouts need a margin below longrun's 2 s default floor; 600 ms leaves room for a
# checkpoint write and a cold-process hand-off (boto3 import + client, ~0.3-0.5 s).
FAST = {"LONGRUN_MIN_MARGIN_MS": "600"}
WAIT_S = 60.0


# -- the journal and what it proves -----------------------------------------------------------


@dataclass(frozen=True)
class Line:
    item: int
    hop: int
    where: str
    request_id: str
    ms: int
    pid: int


class Journal:
    """``item START HOP WHERE REQUEST_ID MS PID`` and
    ``enter HOP WHERE REQUEST_ID REMAINING MS PID`` lines."""

    def __init__(self, path: Path) -> None:
        text = path.read_text() if path.exists() else ""
        self.items: list[Line] = []
        self.enters: list[tuple[int, str, str, int, int, int]] = []
        for raw in text.splitlines():
            parts = raw.split()
            if parts[0] == "item":
                self.items.append(
                    Line(
                        int(parts[1]),
                        int(parts[2]),
                        parts[3],
                        parts[4],
                        int(parts[5]),
                        int(parts[6]),
                    )
                )
            elif parts[0] == "enter":
                self.enters.append(
                    (int(parts[1]), parts[2], parts[3], int(parts[4]), int(parts[5]), int(parts[6]))
                )

    def counts(self) -> Counter[int]:
        return Counter(line.item for line in self.items)

    def of(self, record: InvocationRecord) -> list[Line]:
        """The lines the invocation (or task) ``record`` wrote: its process's while it ran (a
        duplicate shares the request id of the delivery it duplicates; a warm process serves
        several invocations, one after another)."""
        end = record.ended_ms or float("inf")
        return [
            line
            for line in self.items
            if line.pid == record.pid and record.started_ms <= line.ms <= end
        ]


def unsaved(record: InvocationRecord, lines: list[Line]) -> list[Line]:
    """The lines of ``record`` that its checkpoint did not keep (to be done again)."""
    if record.killed_at_ms is not None and record.unsaved_ms is not None:
        last_write = record.killed_at_ms - record.unsaved_ms
        return [line for line in lines if line.ms > last_write]
    if record.items is not None:
        return lines[record.items :]
    return []


@dataclass
class Redo:
    windows: list[tuple[InvocationRecord, list[Line]]]
    redone: int

    def per_kill(self) -> list[int]:
        return [len(lines) for record, lines in self.windows if record.outcome == "killed"]


def check_run(
    report: Report, run_id: str, event: dict[str, Any], journal: Journal
) -> tuple[RunSummary, Redo]:
    """The run completed with the right result, lost nothing, redid only unsaved windows."""
    run = report.run(run_id)
    assert run.status == "completed", report.text()
    assert run.result == job.expected(event), report.text()
    batches = set(range(0, int(event["records"]), int(event.get("batch", 50))))
    counts = journal.counts()
    assert set(counts) == batches, f"lost: {sorted(batches - set(counts))}\n{report.text()}"
    windows = []
    allowed: Counter[int] = Counter()
    for record in report.of_run(run_id):
        lost = unsaved(record, journal.of(record))
        if lost or record.outcome in ("killed", "crashed", "error"):
            windows.append((record, lost))
            allowed.update(line.item for line in lost)
    for item, count in counts.items():
        assert count - 1 <= allowed[item], (
            f"batch {item} done {count} times, only {allowed[item]} redo(s) explained by "
            f"unsaved windows\n{report.text()}"
        )
    return run, Redo(windows, sum(count - 1 for count in counts.values()))


def figure(name: str, **values: Any) -> None:
    print(f"FIGURE {name} " + json.dumps(values, default=str), flush=True)


def first_item_ms(run: RunSummary, journal: Journal) -> list[int]:
    """Hand-off to the next hop's first item: its handler entry (``enter`` line, written when
    the first item starts) minus the yielding hop's ``continued`` write."""
    found = []
    for handoff in run.handoffs:
        enters = [
            e for e in journal.enters if e[0] == handoff.to_hop and e[4] >= handoff.claimed_ms
        ]
        if enters:
            found.append(enters[0][4] - handoff.written_ms)
    return found


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.txt"


@pytest.fixture
def platform_log(longrun_local: LocalLambda) -> list[str]:
    lines: list[str] = []
    longrun_local.log = lines.append
    return lines


def run_job(
    emulator: LocalLambda,
    event: dict[str, Any],
    journal_path: Path,
    *,
    handler: str = APP,
    env: dict[str, str] | None = None,
    wait: float = WAIT_S,
    **deploy: Any,
) -> tuple[Report, str]:
    function = emulator.deploy(
        handler, env={**FAST, "JOB_JOURNAL": str(journal_path), **(env or {})}, **deploy
    )
    run_id = emulator.invoke(function, event)
    return emulator.wait(timeout=wait), run_id


# -- the platform contract ---------------------------------------------------------------------

CONTRACT_HANDLER = """
import os, time

def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("fail"):
        raise ValueError("boom")
    if event.get("big"):
        return "x" * event["big"]
    return {
        "request_id": context.aws_request_id,
        "remaining": context.get_remaining_time_in_millis(),
        "name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "version": context.function_version,
        "arn": context.invoked_function_arn,
        "group": context.log_group_name,
        "stream": context.log_stream_name,
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "max_concurrency": os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY"),
        "region": os.environ.get("AWS_REGION"),
        "pid": os.getpid(),
    }
"""


def test_runtime_api_speaks_awslambdaric(tmp_path: Path) -> None:
    """The Runtime API with the real runtime client: next, response, error, init error."""
    (tmp_path / "fn.py").write_text(CONTRACT_HANDLER)
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(tmp_path),
        "AWS_LAMBDA_FUNCTION_NAME": "contract",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    }
    with RuntimeApi() as api:
        process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", "fn.handler"],
            env={**env, "AWS_LAMBDA_RUNTIME_API": api.address},
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            ok = api.assign("req-1", b"{}", function_arn="arn:fn", timeout_s=3.0)
            assert ok.wait(15) and ok.outcome == "response"
            body = json.loads(ok.response or b"")
            assert body["request_id"] == "req-1" and body["arn"] == "arn:fn"
            assert (body["name"], body["memory"]) == ("contract", "256")
            assert 2500 < body["remaining"] <= 3000  # counts down from the timeout
            assert body["trace"].startswith("Root=1-")
            failed = api.assign("req-2", b'{"fail": 1}', function_arn="arn:fn", timeout_s=3.0)
            assert failed.wait(15) and failed.outcome == "error"
            assert failed.error is not None and failed.error["errorType"] == "ValueError"
            assert failed.error["errorMessage"] == "boom"
        finally:
            process.kill()
            process.wait(5)
        calls = [(r.method, r.path) for r in api.requests]
        assert calls[:4] == [
            ("GET", "/2018-06-01/runtime/invocation/next"),
            ("POST", "/2018-06-01/runtime/invocation/req-1/response"),
            ("GET", "/2018-06-01/runtime/invocation/next"),
            ("POST", "/2018-06-01/runtime/invocation/req-2/error"),
        ]
    with RuntimeApi() as api:  # a handler that cannot be imported: /init/error, exit 1
        process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", "missing.handler"],
            env={**env, "AWS_LAMBDA_RUNTIME_API": api.address},
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert process.wait(15) == 1
        assert api.init_error is not None
        assert api.init_error["errorType"] == "Runtime.ImportModuleError"


def test_emulated_function_contract(
    longrun_local: LocalLambda, tmp_path: Path, platform_log: list[str]
) -> None:
    """Sync and async invocations, context and environment, limits, the timeout kill."""
    (tmp_path / "fn.py").write_text(CONTRACT_HANDLER)
    fn = longrun_local.deploy(
        f"{tmp_path / 'fn.py'}:handler",
        name="contract",
        timeout_s=1.0,
        memory_mb=256,
        escalate=False,
        retries=0,
        env={"AWS_LAMBDA_MAX_CONCURRENCY": "4"},  # never reaches the runtime (LMI mode)
    )
    body = longrun_local.invoke(fn, {}, sync=True)
    assert body["name"] == "contract" and body["memory"] == "256" and body["version"] == "$LATEST"
    assert body["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:contract"
    assert body["group"] == "/aws/lambda/contract" and "[$LATEST]" in body["stream"]
    assert body["max_concurrency"] is None and body["region"] == "us-east-1"
    assert 700 < body["remaining"] <= 1000
    again = longrun_local.invoke(fn, {}, sync=True)
    assert again["pid"] == body["pid"]  # the warm environment, reused

    with pytest.raises(FunctionError) as failed:
        longrun_local.invoke(fn, {"fail": 1}, sync=True)
    assert failed.value.error_type == "ValueError"
    with pytest.raises(FunctionError) as big:
        longrun_local.invoke(fn, {"big": 6_300_000}, sync=True)
    assert big.value.error_type == "Function.ResponseSizeTooLarge"
    with pytest.raises(Exception, match="RequestEntityTooLargeException"):
        longrun_local.invoke(fn, {"pad": "x" * 1_048_600})  # async limit: 1 MB

    with pytest.raises(FunctionError) as timed_out:
        longrun_local.invoke(fn, {"sleep": 5}, sync=True)
    assert timed_out.value.error_type == "Sandbox.Timedout"
    [line] = [line for line in platform_log if "Task timed out after" in line]
    assert line.split()[-3] == "after" and 1.0 <= float(line.split()[-2]) < 1.2

    request_id = longrun_local.invoke(fn, {"sleep": 5})  # async, no retries: a dead letter
    report = longrun_local.wait(timeout=WAIT_S)
    [letter] = report.dead_letters
    assert letter["requestContext"]["requestId"] == request_id
    assert letter["requestContext"]["condition"] == "RetriesExhausted"
    assert letter["requestPayload"] == {"sleep": 5}
    assert letter["responsePayload"]["errorType"] == "Sandbox.Timedout"
    killed = [r for r in report.invocations if r.request_id == request_id]
    assert [(r.kind, r.outcome, r.reason) for r in killed] == [("start", "killed", "timeout")]
    # A killed environment is thrown away: the next invocation is a cold start again.
    after = longrun_local.invoke(fn, {}, sync=True)
    assert after["pid"] not in (body["pid"], killed[0].pid)
    records = longrun_local.report().invocations
    assert [r.cold for r in records if r.function == "contract"][:2] == [True, False]
    assert records[-1].cold and records[-1].init_ms is not None


# -- a plain run --------------------------------------------------------------------------------


def test_plain_multi_hop_run(longrun_local: LocalLambda, journal_path: Path) -> None:
    event = {"records": 300, "batch": 10, "work_s": 0.08}
    report, run_id = run_job(
        longrun_local, event, journal_path, timeout_s=1.5, max_hops=10, escalate=False
    )
    journal = Journal(journal_path)
    run, redo = check_run(report, run_id, event, journal)
    assert redo.redone == 0 and run.kills == 0
    assert run.lambda_hops >= 3 and run.fargate_hops == 0
    assert all(c == 1 for c in journal.counts().values())
    assert [r.outcome for r in report.of_run(run_id)][-1] == "completed"
    # Each hop's context counted down from the timeout when the handler started.
    assert all(500 < enter[3] <= 1500 for enter in journal.enters)
    hops = [r for r in report.of_run(run_id)]
    assert all(r.checkpoint_bytes and r.items for r in hops)
    assert sum(r.items or 0 for r in hops) == 30
    assert len(run.handoffs) == run.lambda_hops - 1
    sends = [r.send_ms for r in hops if r.outcome == "continued"]
    assert len(sends) == len(run.handoffs) and all(s is not None and s > 0 for s in sends)
    figure(
        "handoff",
        claim_ms=[h.ms for h in run.handoffs],
        median_claim_ms=run.handoff_median_ms(),
        first_item_ms=first_item_ms(run, journal),
        send_ms=sends,
    )


# -- kills, retries, the safety net -------------------------------------------------------------


@pytest.mark.parametrize("seed", [2, 5, 9])  # hop 0 at 0.21 s, hop 1 at 0.63 s and 0.55 s
def test_hop_killed_at_a_random_moment_is_resumed_by_the_retry(
    longrun_local: LocalLambda, journal_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    target_hop = rng.choice([0, 1])
    at_s = rng.uniform(0.15, 0.8)  # a hop works ~0.9 s (1.5 s timeout, 0.6 s margin)
    kills: list[InvocationRecord] = []

    def kill_after(record: InvocationRecord) -> float | None:
        if not kills and record.event_hop == target_hop and record.attempt == 1:
            kills.append(record)
            return at_s
        return None

    event = {"records": 300, "batch": 10, "work_s": 0.06}
    report, run_id = run_job(
        longrun_local,
        event,
        journal_path,
        env={"LONGRUN_CHECKPOINT_EVERY_S": "0.3"},
        timeout_s=1.5,
        escalate=False,
        # Lambda retries after 1 and 2 minutes, when a killed hop's deadline has passed;
        # a retry before it would find the dead hop's claim still live (ClaimBusy).
        retry_delays_s=(1.6, 1.6),
        kill_after=kill_after,
        store="s3" if seed == 9 else None,
    )
    _run, redo = check_run(report, run_id, event, Journal(journal_path))
    [killed] = [r for r in report.of_run(run_id) if r.outcome == "killed"]
    assert killed.reason == "SIGKILL injected" and killed.hop == target_hop
    retry = [r for r in report.of_run(run_id) if r.kind == "retry"]
    assert retry and retry[0].request_id == killed.request_id and retry[0].hop == target_hop
    # unsaved_ms is None when the kill came before the hop's claim: nothing was lost then.
    assert killed.unsaved_ms is None or killed.unsaved_ms < 1500
    # Redone work is bounded by the checkpoint period (0.3 s) plus one item in flight.
    assert redo.redone <= 0.3 / 0.06 + 2
    figure(
        "sigkill",
        seed=seed,
        hop=target_hop,
        at_s=round(at_s, 3),
        unsaved_ms=killed.unsaved_ms,
        redone_items=redo.per_kill(),
        store="s3" if seed == 9 else "file",
    )


def test_handler_that_never_yields_is_killed_retried_then_escalated_by_the_safety_net(
    longrun_local: LocalLambda, journal_path: Path, platform_log: list[str]
) -> None:
    event = {"records": 600, "batch": 10, "work_s": 0.1, "checkpoint_every": 2}
    report, run_id = run_job(
        longrun_local,
        event,
        journal_path,
        handler=STUBBORN,
        timeout_s=1.2,
        retry_delays_s=(0.2, 0.2),
        wait=90,
    )
    run, redo = check_run(report, run_id, event, Journal(journal_path))
    mine = report.of_run(run_id)
    lambda_attempts = [r for r in mine if r.where == "lambda" and r.kind != "safety-net"]
    assert [(r.kind, r.attempt, r.outcome, r.reason) for r in lambda_attempts] == [
        ("start", 1, "killed", "timeout"),
        ("retry", 2, "killed", "timeout"),
        ("retry", 3, "killed", "timeout"),
    ]
    [net] = [r for r in mine if r.kind == "safety-net"]
    assert net.outcome == "escalated", net.log
    [task] = [r for r in mine if r.kind == "fargate"]
    assert task.outcome == "completed" and task.hop == 1
    assert [h["where"] for h in run.hops] == ["lambda"] * 3 + ["fargate"]
    assert sum("Task timed out after 1.2" in line for line in platform_log) == 3
    assert all(r.unsaved_ms is not None for r in lambda_attempts)
    figure(
        "never_yields",
        kills=len(redo.per_kill()),
        unsaved_ms=[r.unsaved_ms for r in lambda_attempts],
        redone_items=redo.per_kill(),
        fargate_items=len(Journal(journal_path).of(task)),
    )


def test_hop_killed_early_is_left_to_its_lease_then_resumed_by_the_safety_net(
    longrun_local: LocalLambda, journal_path: Path
) -> None:
    """A hop SIGKILLed long before its deadline (an out-of-memory kill) leaves a live claim.
    Lambda's retries arrive while it is live (ClaimBusy, no user code), then the on-failure
    record reaches the safety net, which must not take a live claim over either: it fails
    and is retried, and only once the lease has expired does it resume the run in Fargate.
    No item is lost and none is done twice beyond what the kill left unsaved."""
    kills: list[InvocationRecord] = []

    def kill_after(record: InvocationRecord) -> float | None:
        if not kills and record.event_hop == 0 and record.attempt == 1:
            kills.append(record)
            return 0.4
        return None

    event = {"records": 200, "batch": 10, "work_s": 0.03}
    report, run_id = run_job(
        longrun_local,
        event,
        journal_path,
        env={"LONGRUN_CHECKPOINT_EVERY_S": "0.1"},
        timeout_s=4.0,
        # Both Lambda retries come while the dead hop's 4 s lease is live; the safety net's
        # own retries (same delays) outlast it.
        retry_delays_s=(1.2, 1.2),
        kill_after=kill_after,
        wait=120,
    )
    run, redo = check_run(report, run_id, event, Journal(journal_path))
    mine = report.of_run(run_id)
    [killed] = [r for r in mine if r.outcome == "killed"]
    assert killed.reason == "SIGKILL injected"
    # The lease runs to at least 4 s after the killed attempt started (its deadline counts
    # from when the runtime handed it the event, after the process start).
    claim_deadline_ms = killed.started_ms + 4000
    early = [r for r in mine if r is not killed and r.started_ms < claim_deadline_ms - 50]
    # Nothing that came while the claim was live ran user code or took the run over: each
    # was refused (ClaimBusy from Lambda's retries, a failed record from the safety net).
    assert early, "no delivery met the live claim: the scenario did not happen"
    for record in early:
        assert record.error_type in ("ClaimBusy", "SafetyNetError"), record
        assert not Journal(journal_path).of(record)
    assert run.status == "completed"
    assert redo.redone <= 0.1 / 0.03 * 10 + 20


def test_duplicate_delivery_of_every_event(longrun_local: LocalLambda, journal_path: Path) -> None:
    longrun_local.rng.seed(11)
    event = {"records": 400, "batch": 10, "work_s": 0.06}
    report, run_id = run_job(
        longrun_local,
        event,
        journal_path,
        timeout_s=1.5,
        escalate=False,
        duplicate_rate=1.0,
        duplicate_delay_s=1.5,
        retry_delays_s=(1.6, 1.6),  # a refused duplicate's retry comes after its hop ended
    )
    journal = Journal(journal_path)
    run, redo = check_run(report, run_id, event, journal)
    assert redo.redone == 0 and all(c == 1 for c in journal.counts().values())
    mine = report.of_run(run_id)
    duplicates = [r for r in mine if r.kind == "duplicate"]
    assert len(duplicates) >= run.lambda_hops  # every accepted event was delivered twice
    ran_user_code = {line.request_id for line in journal.items}
    for record in mine:
        if record.outcome == "duplicate" or record.error_type == "ClaimBusy":
            assert not journal.of(record)
    assert run.duplicates_refused >= len(duplicates)
    assert len(ran_user_code) == run.lambda_hops
    figure(
        "duplicates",
        delivered=run.duplicates_delivered,
        refused=run.duplicates_refused,
        hops=run.lambda_hops,
        outcomes=Counter(r.outcome for r in mine if r.kind in ("duplicate", "retry")),
    )


def test_crash_between_checkpoint_and_handoff(
    longrun_local: LocalLambda, journal_path: Path, tmp_path: Path
) -> None:
    event = {"records": 450, "batch": 10, "work_s": 0.06}
    marker = tmp_path / "crashed"
    report, run_id = run_job(
        longrun_local,
        event,
        journal_path,
        env={"JOB_CRASH_BEFORE_HANDOFF": str(marker), "JOB_CRASH_HOP": "1"},
        timeout_s=1.5,
        escalate=False,
        retry_delays_s=(0.2, 0.2),
    )
    journal = Journal(journal_path)
    _run, redo = check_run(report, run_id, event, journal)
    assert marker.exists()
    assert redo.redone == 0  # the "continued" checkpoint held every finished item
    mine = report.of_run(run_id)
    [crashed] = [r for r in mine if r.outcome == "crashed"]
    assert crashed.hop == 1 and crashed.checkpoint_status in ("continued", "running")
    assert crashed.error_message and "exit status 1" in crashed.error_message
    [resent] = [r for r in mine if r.kind == "retry"]
    assert resent.request_id == crashed.request_id
    assert (resent.outcome, resent.reason) == ("continued", "resent")
    assert not journal.of(resent)  # the retry only re-sent hop 2
    figure("crash_before_handoff", resend_s=round(resent.start_s - crashed.end_s, 3))


PLAIN_HANDLER = """
import os, time

def handler(event, context):
    with open(os.environ["PLAIN_JOURNAL"], "a") as out:
        out.write(context.aws_request_id + "\\n")
    time.sleep(event["sleep"])
    return {"slept": event["sleep"]}
"""


def test_undecorated_function_that_times_out_runs_in_fargate_via_the_safety_net(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    (tmp_path / "plain.py").write_text(PLAIN_HANDLER)
    journal = tmp_path / "plain.txt"
    fn = longrun_local.deploy(
        f"{tmp_path / 'plain.py'}:handler",
        timeout_s=1.0,
        retry_delays_s=(0.1, 0.1),
        env={"PLAIN_JOURNAL": str(journal)},
    )
    request_id = longrun_local.invoke(fn, {"sleep": 2})
    report = longrun_local.wait(timeout=WAIT_S)
    kinds = [(r.kind, r.outcome) for r in report.invocations]
    assert kinds == [
        ("start", "killed"),
        ("retry", "killed"),
        ("retry", "killed"),
        ("safety-net", "started"),
        ("fargate", "completed"),
    ], report.text()
    assert report.invocations[-1].response == {"slept": 2}
    entries = journal.read_text().split()
    assert entries[:3] == [request_id] * 3 and entries[3].startswith("fargate-")


# -- the store failing --------------------------------------------------------------------------


@pytest.fixture
def fault_proxy(longrun_local: LocalLambda) -> Iterator[FaultProxy]:
    with FaultProxy(longrun_local.moto.url) as proxy:
        yield proxy


S3_RETRIES = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "3"}


def run_job_behind_proxy(
    emulator: LocalLambda,
    event: dict[str, Any],
    journal_path: Path,
    fault_proxy: FaultProxy,
    **deploy: Any,
) -> tuple[Report, str, Journal, RunSummary, Redo]:
    """:func:`run_job` with the checkpoints in moto's S3 reached through ``fault_proxy``
    (botocore's standard retries, 3 attempts) and no escalation, then :func:`check_run`."""
    report, run_id = run_job(
        emulator,
        event,
        journal_path,
        env={**S3_RETRIES, "AWS_ENDPOINT_URL_S3": fault_proxy.url},
        store="s3",
        escalate=False,
        **deploy,
    )
    journal = Journal(journal_path)
    run, redo = check_run(report, run_id, event, journal)
    return report, run_id, journal, run, redo


def test_store_throttled_writes_are_retried_by_botocore(
    longrun_local: LocalLambda, journal_path: Path, fault_proxy: FaultProxy
) -> None:
    # The third checkpoint write (hop 1's claim) gets a 503 SlowDown, then a 500: botocore's
    # third attempt goes through and the hop carries on.
    fault_proxy.fail_s3_puts(
        times=1, status=503, code="SlowDown", skip=2, key_suffix="checkpoint.json"
    )
    fault_proxy.fail_s3_puts(
        times=1, status=500, code="InternalError", skip=2, key_suffix="checkpoint.json"
    )
    # The claim can take ~1 s longer (SlowDown backs off up to 1 s) and the adaptive margin
    # learns that write time: a 4 s timeout leaves the hop room to make progress after it.
    event = {"records": 900, "batch": 10, "work_s": 0.06}
    report, run_id, _, run, redo = run_job_behind_proxy(
        longrun_local, event, journal_path, fault_proxy, timeout_s=4.0
    )
    assert fault_proxy.injected() == 2
    assert redo.redone == 0 and run.kills == 0 and run.retries == 0
    assert all(r.outcome in ("continued", "completed") for r in report.of_run(run_id))


def test_store_failing_every_retry_fails_the_hop_cleanly_and_lambda_retry_resumes(
    longrun_local: LocalLambda, journal_path: Path, fault_proxy: FaultProxy
) -> None:
    # Writes: hop 0 claim, hop 0 continued, hop 1 claim, then hop 1's "continued" write:
    # that one gets three 500s (botocore's three attempts), so the hop fails with StoreError.
    fault_proxy.fail_s3_puts(times=3, status=500, skip=3, key_suffix="checkpoint.json")
    event = {"records": 240, "batch": 10, "work_s": 0.06}
    report, run_id, journal, run, redo = run_job_behind_proxy(
        longrun_local, event, journal_path, fault_proxy, timeout_s=2.0, retry_delays_s=(0.2, 0.2)
    )
    assert fault_proxy.injected() == 3
    mine = report.of_run(run_id)
    [failed] = [r for r in mine if r.outcome == "error"]
    assert failed.error_type == "StoreError" and failed.hop == 1 and failed.items == 0
    [retry] = [r for r in mine if r.kind == "retry"]
    assert retry.request_id == failed.request_id and retry.hop == 1
    assert retry.outcome in ("continued", "completed")
    failed_items = journal.of(failed)
    assert redo.redone == len(failed_items) > 0  # exactly the unsaved hop, done again
    assert next(h["outcome"] for h in run.hops if h["hop"] == 1) == "failed"
    figure("store_failure", failed_hop_items=len(failed_items), redone=redo.redone)


# -- Fargate ------------------------------------------------------------------------------------


def test_runner_sigtermed_mid_run_hands_over_to_a_replacement_task(
    longrun_local: LocalLambda, journal_path: Path
) -> None:
    event = {"records": 400, "batch": 10, "work_s": 0.1}
    function = longrun_local.deploy(
        APP,
        env={**FAST, "JOB_JOURNAL": str(journal_path)},
        timeout_s=1.5,
        max_hops=0,  # hop 0 in Lambda, then Fargate
    )
    run_id = longrun_local.invoke(function, event)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        in_fargate = [ln for ln in Journal(journal_path).items if ln.where == "fargate"]
        if len(in_fargate) >= 5:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the Fargate task never got going")
    [task] = longrun_local.tasks
    task.terminate()
    report = longrun_local.wait(timeout=WAIT_S)
    journal = Journal(journal_path)
    run, redo = check_run(report, run_id, event, journal)
    assert redo.redone == 0
    tasks = [r for r in report.of_run(run_id) if r.kind == "fargate"]
    assert [(r.hop, r.outcome) for r in tasks] == [(1, "continued"), (2, "completed")]
    assert tasks[0].reason == "replacement task after SIGTERM"
    assert [h["where"] for h in run.hops] == ["lambda", "fargate", "fargate"]
    assert run.hops[1]["outcome"] == "escalated"
    figure(
        "sigterm",
        items_before_stop=len(journal.of(tasks[0])),
        handoff_to_fargate_ms=[h.ms for h in run.handoffs if h.via == "fargate"],
    )


# -- the command --------------------------------------------------------------------------------


def test_longrun_local_command(tmp_path: Path) -> None:
    event = {"records": 400, "batch": 10, "work_s": 0.06}
    (tmp_path / "event.json").write_text(json.dumps(event))
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "longrun.cli",
            "local",
            "examples/emulator/app.py:handler",
            "--event",
            str(tmp_path / "event.json"),
            "--timeout",
            "1.5",
            "--max-hops",
            "1",
            "--store",
            "s3://cli-bucket/runs/",
            "--env",
            "LONGRUN_MIN_MARGIN_MS=600",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    [run] = report["runs"]
    assert run["status"] == "completed" and run["result"] == job.expected(event)
    assert (run["lambda_hops"], run["fargate_hops"]) == (2, 1)
    kinds = [i["kind"] for i in report["invocations"]]
    assert kinds == ["start", "hop", "fargate"]
    assert all(i["checkpoint_bytes"] for i in report["invocations"])
    lines = result.stderr.splitlines()
    assert sum(" hop " in line for line in lines if line.startswith("[")) == 3
    assert any(line.startswith(f"run {run['run_id']}: completed") for line in lines)
    assert time.monotonic() - started < 60


def test_demo_runs_and_verifies() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "examples/emulator/demo.py",
            "--records",
            "1200",
            "--batch",
            "10",
            "--work",
            "0.05",
            "--timeout",
            "3",
            "--max-hops",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified: 1200 records in 120 batches" in result.stdout
    assert "2 Lambda hop(s) + 1 Fargate task(s)" in result.stdout


WARM_HANDLER = """
import os

calls = 0  # module state: kept by a warm execution environment, as Lambda keeps it


def handler(event, context):
    global calls
    calls += 1
    if event.get("crash"):
        os._exit(3)
    return {"calls": calls, "pid": os.getpid()}
"""


def test_warm_environments_keep_module_state_until_a_crash(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    """Lambda reuses a warm environment (module state and all) and replaces one that
    crashed: a handler that counts its calls in a module global sees 1, 2, 3, then 1."""
    (tmp_path / "warm.py").write_text(WARM_HANDLER)
    fn = longrun_local.deploy(
        f"{tmp_path / 'warm.py'}:handler", name="warm", timeout_s=5, escalate=False, retries=0
    )
    seen = [longrun_local.invoke(fn, {}, sync=True) for _ in range(3)]
    assert [s["calls"] for s in seen] == [1, 2, 3]
    assert len({s["pid"] for s in seen}) == 1
    with pytest.raises(FunctionError):
        longrun_local.invoke(fn, {"crash": True}, sync=True)
    fresh = longrun_local.invoke(fn, {}, sync=True)
    assert fresh["calls"] == 1 and fresh["pid"] != seen[0]["pid"]
    records = [r for r in longrun_local.report().invocations if r.function == "warm"]
    assert [r.cold for r in records] == [True, False, False, False, True]
    assert [r.init_ms is not None for r in records] == [r.cold for r in records]


CHATTY_HANDLER = """
import os
import sys


def handler(event, context):
    n = event["n"]
    for i in range(event["lines"]):  # a burst written just before the answer
        print(f"invocation {n} line {i}")
    if event.get("crash"):
        sys.stdout.write(f"invocation {n} last words\\n")
        os._exit(3)
    return n
"""


def test_every_line_printed_before_the_answer_goes_to_its_own_invocation(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    """A warm environment's output is one pipe for all its invocations: a burst printed just
    before the answer may still be unread when the answer arrives (here the echo slows the
    reader down). Each line belongs to the invocation that printed it (none lost, none given
    to the next one), and a crashed invocation keeps what it printed before it died."""
    (tmp_path / "chatty.py").write_text(CHATTY_HANDLER)
    fn = longrun_local.deploy(
        f"{tmp_path / 'chatty.py'}:handler", name="chatty", timeout_s=10, escalate=False, retries=0
    )
    lines = 2000
    echoed: list[str] = []

    def slow_echo(line: str) -> None:  # a reader that falls behind, as on a loaded machine
        echoed.append(line)
        time.sleep(0.0002)

    longrun_local.log = slow_echo
    longrun_local.echo_logs = True
    for n in range(4):
        assert longrun_local.invoke(fn, {"n": n, "lines": lines}, sync=True) == n
    with pytest.raises(FunctionError):
        longrun_local.invoke(fn, {"n": 4, "lines": lines, "crash": True}, sync=True)
    records = [r for r in longrun_local.report().invocations if r.function == "chatty"]
    assert [r.cold for r in records] == [True, False, False, False, False]
    for n, record in enumerate(records):
        mine = [line for line in record.log if line.startswith("invocation ")]
        expected = [f"invocation {n} line {i}" for i in range(lines)]
        if n == 4:
            expected.append("invocation 4 last words")
        assert mine == expected, f"invocation {n}: {len(mine)} of {len(expected)} lines"
