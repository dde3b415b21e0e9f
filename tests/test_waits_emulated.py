"""Steps, sleeps and callbacks with real hop processes: the emulator's functions make real
wake-up schedules in its moto EventBridge Scheduler, which the emulator fires at their time,
and a callback is answered by ``longrun callback`` as a process of its own. Steps run once
(counted in a journal the step functions append to) across hops, a hop killed in the middle
of a step, and every event delivered twice; a retry backoff longer than the hop waits for a
real schedule; an at-most-once step killed midway is not run again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from longrun import get_run
from longrun.testing.emulator import LocalLambda

APP = """
import time

from longrun import current_run, longrun


@longrun(run_id=lambda event: event["id"], margin_ms=500)
def handler(event, context):
    run = current_run()
    fetched = run.step("fetch", lambda: print("STEP fetch", flush=True) or {"rows": 3})
    run.sleep(event["sleep_s"], name="cool-off")
    if event.get("ask"):
        token = run.callback("approval", timeout_s=120)
        print(f"TOKEN {token}", flush=True)
        decision = run.wait_for_callback("approval")
    else:
        decision = None
    loaded = run.step("load", lambda: print("STEP load", flush=True) or fetched["rows"] * 2)
    return {"loaded": loaded, "decision": decision}
"""


def deploy(longrun_local: LocalLambda, tmp_path: Path, name: str) -> Any:
    (tmp_path / f"{name}.py").write_text(APP)
    return longrun_local.deploy(
        f"{tmp_path / f'{name}.py'}:handler",
        name=name,
        timeout_s=2.0,
        store=f"file://{tmp_path / 'store'}",
        escalate=False,
    )


def step_lines(records: list[Any]) -> list[str]:
    return [line for r in records for line in r.log if line.startswith("STEP ")]


def test_a_sleep_longer_than_the_hop_is_woken_by_a_real_schedule(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    fn = deploy(longrun_local, tmp_path, "sleeper")
    started = time.monotonic()
    longrun_local.invoke(fn, {"id": "z-1", "sleep_s": 4})
    report = longrun_local.wait(timeout=90)
    took = time.monotonic() - started
    records = [r for r in report.invocations if r.run_id == "z-1"]
    assert [r.outcome for r in records] == ["waiting", "completed"]
    assert records[-1].response == {"loaded": 6, "decision": None}
    assert step_lines(records) == ["STEP fetch", "STEP load"]  # each step once
    assert took >= 3.0  # it slept (the schedule fired at its time), with no process between
    info = get_run("z-1", store=f"file://{tmp_path / 'store'}")
    assert info.status == "completed" and info.hop == 1


def test_a_callback_answered_by_the_cli_wakes_the_run(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    fn = deploy(longrun_local, tmp_path, "approver")
    longrun_local.invoke(fn, {"id": "z-2", "sleep_s": 0, "ask": True})
    # Not settled while it waits: its timeout's wake-up is pending. Wait for the waiting hop.
    deadline = time.monotonic() + 60
    records: list[Any] = []
    while time.monotonic() < deadline and not records:
        records = [
            r for r in longrun_local.report().invocations
            if r.run_id == "z-2" and r.outcome == "waiting"
        ]  # fmt: skip
        time.sleep(0.1)
    assert records, "the run never went waiting"
    assert not longrun_local.settled()
    [token] = [line.split()[1] for line in records[0].log if line.startswith("TOKEN ")]
    answered = subprocess.run(
        [sys.executable, "-m", "longrun.cli", "callback", token, "--payload",
         json.dumps({"approved": True}), "--store", f"file://{tmp_path / 'store'}"],
        capture_output=True, text=True, timeout=60,
        env={
            **os.environ,
            "AWS_ENDPOINT_URL_LAMBDA": longrun_local.endpoint.url,
            "AWS_ENDPOINT_URL_SCHEDULER": longrun_local.moto.url,  # its timeout is deleted
        },
    )  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    assert "callback 'approval' recorded" in answered.stdout
    report = longrun_local.wait(timeout=60)  # settled: the timeout's wake-up was deleted
    records = [r for r in report.invocations if r.run_id == "z-2"]
    assert [r.outcome for r in records] == ["waiting", "completed"]
    assert records[-1].response == {"loaded": 6, "decision": {"approved": True}}
    assert step_lines(records) == ["STEP fetch", "STEP load"]


STEPS_APP = """
import os
import time
from pathlib import Path

from longrun import CallbackTimeout, Retry, StepInterrupted, current_run, longrun

JOURNAL = Path(os.environ["JOURNAL"])


def note(*words):
    with JOURNAL.open("a") as journal:
        journal.write(" ".join(map(str, words)) + "\\n")


def first_time(name):
    marker = JOURNAL.with_name(f"marker-{name}")
    if marker.exists():
        return False
    marker.touch()
    return True


def square(k, hang_at):
    note("start", k)
    if k == hang_at and first_time(f"hang-{k}"):
        time.sleep(60)  # the hop is killed at its timeout, in the middle of this step
    time.sleep(0.15)
    note("done", k)
    return k * k


def flaky():
    note("call", "flaky")
    if first_time("flaky"):
        raise ConnectionError("the first call fails")
    return "ok"


def once():
    note("start", "once")
    if first_time("once"):
        time.sleep(60)  # killed at the timeout: an at-most-once step is not run again
    note("done", "once")
    return "ran"


@longrun(run_id=lambda event: event["id"], margin_ms=500)
def handler(event, context):
    run = current_run()
    if event["job"] == "squares":
        total = run.state.setdefault("total", 0)
        for k in run.iterate(range(event["steps"]), name="steps"):
            run.state["total"] += run.step("square", square, k, event["hang_at"])
        return {"total": run.state["total"]}
    if event["job"] == "backoff":
        retry = Retry(attempts=3, backoff_s=event["backoff_s"], jitter=False)
        return {"flaky": run.step("flaky", flaky, retry=retry)}
    if event["job"] == "ask":
        run.callback("approval", timeout_s=event["timeout_s"])
        try:
            return {"answer": run.wait_for_callback("approval")}
        except CallbackTimeout:
            return {"answer": "timed out"}
    try:
        return {"once": run.step("once", once, at_most_once=True)}
    except StepInterrupted as exc:
        return {"once": "interrupted", "why": str(exc)[:80]}
"""


def deploy_steps(
    longrun_local: LocalLambda, tmp_path: Path, name: str, **options: Any
) -> tuple[Any, Path]:
    (tmp_path / f"{name}.py").write_text(STEPS_APP)
    journal = tmp_path / "journal.txt"
    fn = longrun_local.deploy(
        f"{tmp_path / f'{name}.py'}:handler",
        name=name,
        timeout_s=1.5,
        store=f"file://{tmp_path / 'store'}",
        escalate=False,
        env={"JOURNAL": str(journal)},
        # Lambda retries a killed hop once its lease (its deadline) has run out
        retry_delays_s=(1.0, 1.0),
        **options,
    )
    return fn, journal


def test_each_step_runs_once_across_hops_a_kill_and_duplicate_deliveries(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    fn, journal = deploy_steps(
        longrun_local, tmp_path, "squares", duplicate_rate=1.0, duplicate_delay_s=0.05
    )
    longrun_local.invoke(fn, {"id": "sq-1", "job": "squares", "steps": 16, "hang_at": 9})
    report = longrun_local.wait(timeout=180)
    records = [r for r in report.invocations if r.run_id == "sq-1"]
    [completed] = [r for r in records if r.outcome == "completed"]
    assert completed.response == {"total": sum(k * k for k in range(16))}
    lines = [line.split() for line in journal.read_text().splitlines()]
    done = [int(k) for what, k in lines if what == "done"]
    starts = [int(k) for what, k in lines if what == "start"]
    assert sorted(done) == list(range(16))  # each step's function finished once
    # only the step the kill interrupted was started again (its first call never returned)
    assert sorted(starts) == sorted([*range(16), 9])
    killed = [r for r in records if r.outcome == "killed"]
    assert killed and killed[0].reason == "timeout"
    assert any(r.kind == "duplicate" for r in report.invocations)  # duplicates were delivered
    assert len({r.hop for r in records if r.hop is not None}) >= 2  # it hopped


def test_a_retry_backoff_longer_than_the_hop_is_woken_by_a_real_schedule(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    fn, journal = deploy_steps(longrun_local, tmp_path, "backoff")
    longrun_local.invoke(fn, {"id": "bo-1", "job": "backoff", "backoff_s": 3})
    report = longrun_local.wait(timeout=90)
    records = [r for r in report.invocations if r.run_id == "bo-1"]
    assert [r.outcome for r in records] == ["waiting", "completed"]
    assert records[-1].response == {"flaky": "ok"}
    assert journal.read_text().split() == ["call", "flaky", "call", "flaky"]  # two calls
    info = get_run("bo-1", store=f"file://{tmp_path / 'store'}")
    assert info.status == "completed"


def test_an_at_most_once_step_killed_midway_is_not_run_again(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    fn, journal = deploy_steps(longrun_local, tmp_path, "once")
    longrun_local.invoke(fn, {"id": "am-1", "job": "once"})
    report = longrun_local.wait(timeout=90)
    records = [r for r in report.invocations if r.run_id == "am-1"]
    assert [r.outcome for r in records] == ["killed", "completed"], report
    assert records[-1].response["once"] == "interrupted"
    assert journal.read_text().split() == ["start", "once"]  # started once, never again


def test_an_unanswered_callback_times_out_through_a_real_schedule(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    fn, _ = deploy_steps(longrun_local, tmp_path, "asker")
    longrun_local.invoke(fn, {"id": "ask-1", "job": "ask", "timeout_s": 3})
    report = longrun_local.wait(timeout=90)  # settles once the timeout's wake-up has fired
    records = [r for r in report.invocations if r.run_id == "ask-1"]
    assert [r.outcome for r in records] == ["waiting", "completed"]
    assert records[-1].response == {"answer": "timed out"}


SIX_HOURS = 6 * 3600


def test_fast_waits_skip_long_sleeps_and_timeouts_with_no_real_wait(
    longrun_local_moto: Any, tmp_path: Path
) -> None:
    """``LocalLambda(fast_waits=True)``: with nothing running and only wake-ups pending, the
    emulated clock jumps to the next one. A sleep of six hours and a callback's timeout of
    six hours each take no real time; the woken hop's own clock says the time has come.
    (A day would meet the default max_run_seconds, which counts waits: the run would fail
    with RunTimeExceeded, as it does in AWS.)"""
    from longrun.testing.emulator import LocalLambda

    with LocalLambda(workdir=tmp_path / "emu", moto=longrun_local_moto, fast_waits=True) as emu:
        fn = deploy(emu, tmp_path, "sleeper")
        started = time.monotonic()
        emu.invoke(fn, {"id": "day-1", "sleep_s": SIX_HOURS})
        report = emu.wait(timeout=60)  # six real hours would time this out
        records = [r for r in report.invocations if r.run_id == "day-1"]
        assert [r.outcome for r in records] == ["waiting", "completed"]
        assert records[-1].response == {"loaded": 6, "decision": None}
        assert step_lines(records) == ["STEP fetch", "STEP load"]
        store = f"file://{tmp_path / 'store'}"
        document = json.loads((tmp_path / "store" / "day-1" / "checkpoint.json").read_bytes())
        slept_from, woke_at = (h["started_ms"] for h in document["hops"])
        assert woke_at - slept_from >= SIX_HOURS * 1000  # on the emulated clock
        assert emu.now_ms() - int(time.time() * 1000) >= SIX_HOURS * 1000 - 5_000
        assert time.monotonic() - started < 60
        assert get_run("day-1", store=store).status == "completed"

        fn2, _ = deploy_steps(emu, tmp_path, "asker")
        emu.invoke(fn2, {"id": "ask-day", "job": "ask", "timeout_s": SIX_HOURS})
        report = emu.wait(timeout=60)
        records = [r for r in report.invocations if r.run_id == "ask-day"]
        assert [r.outcome for r in records] == ["waiting", "completed"]
        assert records[-1].response == {"answer": "timed out"}
