"""Steps, sleeps and callbacks with real hop processes: the emulator's functions make real
wake-up schedules in its moto EventBridge Scheduler, which the emulator fires at their time,
and a callback is answered by ``longrun callback`` as a process of its own."""

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
