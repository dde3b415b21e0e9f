"""A live claim is never taken over, and a leased claim survives a failing store.

* The Fargate heartbeat retries transient store errors with backoff and keeps the lease; it
  stops only when the lease is lost, and reports it.
* ``longrun resume`` (and the safety net, see test_safety_net.py) leave a hop that holds a
  live claim alone: the lease decides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from longrun import FileStore, StoreError, current_run, longrun, ports
from longrun.runner import LeaseKeeper


class FlakyStore(FileStore):
    """A FileStore whose next ``failures`` conditional replaces fail like a throttled S3."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failures = 0
        self.failed = 0
        self.lock = threading.Lock()

    def _replace(self, key: str, data: bytes, token: Any) -> Any:
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                self.failed += 1
                raise StoreError(f"injected: cannot write {key}: 503 SlowDown")
        return super()._replace(key, data, token)


class LeasedContext:
    """What the Fargate runner hands a handler: a long deadline and a lease."""

    longrun_where = "fargate"
    longrun_lease_s = 3.0
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"

    def __init__(self) -> None:
        self.aws_request_id = f"task-{uuid.uuid4()}"

    def get_remaining_time_in_millis(self) -> int:
        return 10**9


def _deadline(store: FileStore, run_id: str) -> int:
    loaded = store.load(run_id)
    assert loaded is not None and loaded.checkpoint.claim is not None
    deadline = loaded.checkpoint.claim.deadline_ms
    assert deadline is not None
    return deadline


def _wait(predicate: Any, timeout_s: float = 60.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_heartbeat_keeps_the_lease_through_transient_store_errors(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path)
    hooks = LeaseKeeper(interval_s=0.05)
    seen: dict[str, Any] = {}

    @longrun(checkpoint=store, run_id=lambda e: "leased", checkpoint_every_s=3600)
    def handler(event: Any, context: Any) -> dict[str, Any]:
        first = _deadline(store, "leased")
        store.failures = 5  # the next five renewals fail
        seen["renewed"] = _wait(lambda: store.failures == 0 and _deadline(store, "leased") > first)
        seen["failed"] = store.failed
        return {"ok": True}

    try:
        with ports.installed(observer=hooks):
            assert handler({}, LeasedContext()) == {"ok": True}
    finally:
        hooks.stop.set()

    assert seen == {"renewed": True, "failed": 5}
    assert not hooks.lease_lost.is_set()
    assert store.status("leased")["status"] == "completed"


def test_heartbeat_stops_and_reports_when_the_lease_is_lost(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path)
    hooks = LeaseKeeper(interval_s=0.05)
    seen: dict[str, Any] = {}

    @longrun(checkpoint=store, run_id=lambda e: "taken", checkpoint_every_s=3600)
    def handler(event: Any, context: Any) -> None:
        store.cancel("taken")  # someone else writes: the lease is no longer ours
        seen["lost"] = _wait(hooks.lease_lost.is_set)
        for _ in current_run().iterate(range(3)):  # the next write finds the cancel
            current_run().checkpoint()

    try:
        with ports.installed(observer=hooks):
            response = handler({}, LeasedContext())
    finally:
        hooks.stop.set()

    assert seen == {"lost": True}
    assert response["longrun"]["status"] == "cancelled"
    assert store.status("taken")["status"] == "cancelled"


def test_longrun_resume_leaves_a_live_claim_alone(tmp_path: Path) -> None:
    """A hop that holds a live claim may be working: `longrun resume` refuses (exit 4) and
    writes nothing; the lease decides."""
    store = FileStore(tmp_path)
    started = threading.Event()
    release = threading.Event()

    @longrun(checkpoint=store, run_id=lambda e: "busy-run", checkpoint_every_s=3600)
    def handler(event: Any, context: Any) -> str:
        started.set()
        release.wait(60)
        return "done"

    class LambdaContext(LeasedContext):  # a Lambda hop with 15 minutes ahead of it
        longrun_where = "lambda"
        longrun_lease_s = None  # type: ignore[assignment]

    sim_thread = threading.Thread(target=handler, args=({}, LambdaContext()), daemon=True)
    sim_thread.start()
    try:
        assert started.wait(60)
        before = (tmp_path / "busy-run" / "checkpoint.json").read_bytes()
        resumed = subprocess.run(
            [sys.executable, "-m", "longrun.cli", "--store", f"file://{tmp_path}", "resume",
             "busy-run"],
            capture_output=True, text=True, timeout=60, env=dict(os.environ),
        )  # fmt: skip
        assert resumed.returncode == 4, resumed.stderr
        answer = json.loads(resumed.stdout)
        assert answer["action"] == "busy"
        assert "running under request" in answer["reason"]
        assert (tmp_path / "busy-run" / "checkpoint.json").read_bytes() == before
    finally:
        release.set()
        sim_thread.join(60)
    assert store.status("busy-run")["status"] == "completed"
