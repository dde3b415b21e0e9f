"""The ``longrun`` command, run as a real process against a FileStore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clitool import cli

from longrun import FileStore, current_run, longrun
from longrun.testing import LambdaSim


def test_list_status_cancel(tmp_path: Path) -> None:
    store = FileStore(tmp_path)

    @longrun(checkpoint=store, max_hops=1)
    def handler(event: Any, context: Any) -> None:
        import time

        for _ in current_run().iterate(range(100)):
            time.sleep(1)

    outcome = LambdaSim(store="handler").run(handler, {}, timeout_s=10, retries=0)
    run_id = outcome.run_id
    assert run_id is not None and outcome.status == "failed"

    listed = cli("--store", f"file://{tmp_path}", "list", "--json")
    assert listed.returncode == 0 and [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]

    env = {"LONGRUN_CHECKPOINT_URI": f"file://{tmp_path}"}
    status = cli("status", run_id, "--json", env=env)
    summary = json.loads(status.stdout)
    assert summary["status"] == "failed" and summary["hops"] == 2 and summary["items"] == 18
    assert summary["error"]["type"] == "HopBudgetExhausted"
    readable = cli("status", run_id, env=env).stdout
    assert "status    failed, hop 1 in lambda" in readable
    assert "error     HopBudgetExhausted: run " in readable

    cancelled = cli("--store", f"file://{tmp_path}", "cancel", run_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert store.status(run_id)["status"] == "cancelled"


def test_errors_are_reported_not_raised(tmp_path: Path) -> None:
    missing = cli("--store", f"file://{tmp_path}", "status", "nope")
    assert missing.returncode == 2 and "no run 'nope' in file://" in missing.stderr
    bad_uri = cli("--store", "ftp://x", "list")
    assert bad_uri.returncode == 2 and "--store='ftp://x'" in bad_uri.stderr
    no_store = cli("list", env={"LONGRUN_CHECKPOINT_URI": ""})
    assert no_store.returncode == 2


def test_cli_ignores_unrelated_settings(tmp_path: Path) -> None:
    listed = cli(
        "list",
        env={
            "LONGRUN_CHECKPOINT_URI": f"file://{tmp_path}",
            "LONGRUN_MAX_HOPS": "lots",
            "LONGRUN_DISABLED": "1",
        },
    )
    assert listed.returncode == 0, listed.stderr


def test_resume_a_failed_run_with_a_new_invocation(tmp_path: Path) -> None:
    """`longrun resume` takes a failed run over and invokes its function for the next hop."""
    from longrun.testing.invoke_endpoint import InvokeEndpoint

    store = FileStore(tmp_path)

    @longrun(checkpoint=store, max_hops=0)
    def handler(event: Any, context: Any) -> None:
        import time

        for _ in current_run().iterate(range(100)):
            time.sleep(1)

    outcome = LambdaSim(store="handler").run(handler, {}, timeout_s=10, retries=0)
    run_id = outcome.run_id
    assert run_id is not None and outcome.status == "failed"
    assert (
        store.status(run_id)["function"]
        == "arn:aws:lambda:us-east-1:123456789012:function:longrun-sim"
    )

    with InvokeEndpoint() as endpoint:
        env = {"AWS_ENDPOINT_URL_LAMBDA": endpoint.url}
        resumed = cli("--store", f"file://{tmp_path}", "resume", run_id, env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout) == {
            "run_id": run_id,
            "action": "invoked",
            "reason": "resumed",
            "hop": 1,
        }
        assert [e.json() for e in endpoint.events] == [
            {"longrun": {"v": 1, "run_id": run_id, "hop": 1}}
        ]
        assert endpoint.events[0].function_name == "longrun-sim"
        document = store.status(run_id)
        assert document["status"] == "continued" and document["error"] is None

        # A finished run is left alone.
        document["status"] = "completed"
        loaded = store.load(run_id)
        assert loaded is not None
        store.replace(document, loaded.token)
        again = cli("--store", f"file://{tmp_path}", "resume", run_id, env=env)
        assert again.returncode == 3 and json.loads(again.stdout)["action"] == "skipped"
        assert len(endpoint.events) == 1


def test_store_is_accepted_before_or_after_the_subcommand(tmp_path: Path) -> None:
    store = FileStore(tmp_path)

    @longrun(checkpoint=store, run_id=lambda event: "job-1")
    def handler(event: Any, context: Any) -> str:
        return "ok"

    LambdaSim(store="handler").run(handler, {}, timeout_s=60)
    uri = f"file://{tmp_path}"
    for args in (("--store", uri, "--json", "list"), ("list", "--store", uri, "--json")):
        listed = cli(*args)
        assert listed.returncode == 0, listed.stderr
        assert [r["run_id"] for r in json.loads(listed.stdout)] == ["job-1"]
    for args in (
        ("--store", uri, "--json", "status", "job-1"),
        ("status", "job-1", "--store", uri, "--json"),
    ):
        shown = cli(*args)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["status"] == "completed"
    # Given twice, the later one wins: here an empty store, which holds no run.
    empty = tmp_path / "empty"
    assert cli("--store", uri, "list", "--store", f"file://{empty}", "--json").stdout == "[]\n"


def test_resume_force_takes_over_a_run_escalated_to_a_task_that_is_gone(tmp_path: Path) -> None:
    from longrun.protocol import Checkpoint, Escalation, HopEntry, Status
    from longrun.testing.invoke_endpoint import InvokeEndpoint

    store = FileStore(tmp_path)
    arn = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123456789abcdef"
    store.create(
        Checkpoint(
            run_id="stranded",
            status=Status.ESCALATED,
            hop=2,
            created_ms=1,
            updated_ms=2,
            event={},
            state={"done": 5},
            cursors={},
            hops=(HopEntry(2, 1, "lambda", "req-2", started_ms=1, outcome="escalated"),),
            function="arn:aws:lambda:us-east-1:123456789012:function:job",
            escalation=Escalation("hop budget used up", 3, arn),
        )
    )
    with InvokeEndpoint() as endpoint:
        env = {"AWS_ENDPOINT_URL_LAMBDA": endpoint.url}
        refused = cli("resume", "stranded", "--store", f"file://{tmp_path}", env=env)
        assert refused.returncode == 3 and arn in json.loads(refused.stdout)["reason"]
        assert endpoint.events == []
        forced = cli("resume", "stranded", "--force", "--store", f"file://{tmp_path}", env=env)
        assert forced.returncode == 0, forced.stderr
        assert [e.json() for e in endpoint.events] == [
            {"longrun": {"v": 1, "run_id": "stranded", "hop": 3}}
        ]
    assert store.status("stranded")["status"] == "continued"
