"""``longrun.get_run``: the status API, on runs made by real hops.

The recipe ``examples/recipes/status_api.py`` (an API that starts a job and one that polls
it) runs in the local emulator: real awslambdaric processes, the async invoke through the
emulator's Invoke endpoint, the checkpoints on a shared FileStore. The simulator covers the
other statuses: failed with its error, and the errors of ``get_run`` itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from longrun import (
    FileStore,
    InvalidRunId,
    RunInfo,
    RunNotFound,
    current_run,
    get_run,
    longrun,
)
from longrun.testing import LambdaSim
from longrun.testing.emulator import LocalLambda

RECIPE = Path(__file__).parent.parent / "examples" / "recipes" / "status_api.py"


def test_an_api_starts_a_job_and_polls_it_to_completion(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    store = f"file://{tmp_path / 'store'}"
    worker = longrun_local.deploy(
        f"{RECIPE}:worker", name="jobs-worker", timeout_s=1.5, store=store, escalate=False
    )
    api = longrun_local.deploy(
        f"{RECIPE}:start",
        name="jobs-api",
        store=store,
        escalate=False,
        env={"WORKER_FUNCTION": worker.name},
    )
    poll = longrun_local.deploy(f"{RECIPE}:status", name="jobs-status", store=store, escalate=False)

    started = longrun_local.invoke(api, {"body": json.dumps({"items": 40})}, sync=True)
    assert started["statusCode"] == 202
    run_id = json.loads(started["body"])["run_id"]
    assert started["headers"]["Location"] == f"/jobs/{run_id}"

    report = longrun_local.wait(timeout=90)
    hops = [r for r in report.invocations if r.run_id == run_id]
    assert len(hops) >= 2  # the job outlived one invocation

    answer = longrun_local.invoke(poll, {"pathParameters": {"run_id": run_id}}, sync=True)
    assert answer["statusCode"] == 200
    info = json.loads(answer["body"])
    assert info["status"] == "completed" and info["settled"] is True
    assert info["result"] == {"total": sum(range(40))}
    assert info["items_done"] == 40 and info["hop"] == len(hops) - 1
    assert info["where"] == "lambda" and info["error"] is None
    assert info["updated_ms"] >= info["started_ms"] > 0

    missing = longrun_local.invoke(poll, {"pathParameters": {"run_id": "nope"}}, sync=True)
    assert missing["statusCode"] == 404
    bad = longrun_local.invoke(poll, {"pathParameters": {"run_id": "../etc"}}, sync=True)
    assert bad["statusCode"] == 400


def test_get_run_follows_a_run_through_its_statuses(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    seen: list[RunInfo] = []

    @longrun(checkpoint=store, run_id=lambda event: event["id"], min_margin_ms=1000)
    def handler(event: dict[str, Any], context: Any) -> str:
        run = current_run()
        for i in run.iterate(range(10)):
            seen.append(get_run(run.id, store=store))
            if i == 7:
                raise ValueError("item 7 is bad")
            time.sleep(1.0)  # virtual time in the simulator
        return "never"

    outcome = LambdaSim(store="handler").run(handler, {"id": "st-1"}, timeout_s=4.0, retries=0)
    assert outcome.status == "failed"
    assert {info.status for info in seen} == {"running"}
    assert [info.hop for info in seen] == sorted(info.hop for info in seen)
    final = get_run("st-1", store=f"file://{tmp_path / 'store'}")
    assert final.status == "failed" and final.settled and final.result is None
    assert final.error is not None and final.error["type"] == "ValueError"
    assert "item 7 is bad" in final.error["message"]
    # Hops 0 and 1 saved items 0-5; hop 2 finished item 6, then failed on item 7: a failure is
    # recorded over the last checkpoint, which item 6 never reached.
    assert final.items_done == 6 and final.hop == 2


def test_get_run_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path)
    with pytest.raises(RunNotFound, match="no run 'ghost'"):
        get_run("ghost", store=store)
    with pytest.raises(InvalidRunId):
        get_run("../../etc/passwd", store=store)
    monkeypatch.setenv("LONGRUN_CHECKPOINT_URI", f"file://{tmp_path}")
    with pytest.raises(RunNotFound):
        get_run("ghost")  # the store from the environment
