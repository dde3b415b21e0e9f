"""The ``longrun`` command, run as a real process against a FileStore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from longrun import FileStore, current_run, longrun
from longrun.testing import LambdaSim


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "longrun.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_list_status_cancel(tmp_path: Path) -> None:
    store = FileStore(tmp_path)

    @longrun(checkpoint=store, max_hops=1)
    def handler(event: Any, context: Any) -> None:
        import time

        for _ in current_run().iterate(range(100)):
            time.sleep(1)

    outcome = LambdaSim().run(handler, {}, timeout_s=10, retries=0)
    run_id = outcome.run_id
    assert run_id is not None and outcome.status == "failed"

    listed = cli("--store", f"file://{tmp_path}", "list")
    assert listed.returncode == 0 and listed.stdout.split() == [run_id]

    status = cli("status", run_id, env={"LONGRUN_CHECKPOINT_URI": f"file://{tmp_path}"})
    summary = json.loads(status.stdout)
    assert summary["status"] == "failed" and summary["hops"] == 2 and summary["items"] == 18
    assert summary["error"]["type"] == "HopBudgetExhausted"

    cancelled = cli("--store", f"file://{tmp_path}", "cancel", run_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert store.status(run_id)["status"] == "cancelled"


def test_errors_are_reported_not_raised(tmp_path: Path) -> None:
    missing = cli("--store", f"file://{tmp_path}", "status", "nope")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
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
