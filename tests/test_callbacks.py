"""Callbacks: ``run.callback`` / ``run.wait_for_callback`` in the simulator, answered with
``send_callback`` / ``fail_callback`` (and ``longrun callback`` as a real process through the
Invoke endpoint), with duplicates, a timeout, forged and replayed tokens, and an answer that
lands while the hop is going ``waiting``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from longrun import (
    CallbackFailed,
    CallbackRefused,
    CallbackTimeout,
    FileStore,
    MemoryStore,
    current_run,
    fail_callback,
    longrun,
    send_callback,
)
from longrun.stores.base import CheckpointStore
from longrun.testing import Faults, LambdaSim

HOUR = 3600.0


def approval_job(store: CheckpointStore, calls: Counter[str], tokens: list[str]) -> Any:
    @longrun(checkpoint=store, run_id=lambda e: e["id"], min_margin_ms=1000)
    def handler(event: Any, context: Any) -> dict[str, Any]:
        run = current_run()
        report = run.step("report", lambda: calls.update(["report"]) or "report-1")
        token = run.callback("approval", timeout_s=event.get("timeout_s", HOUR))
        tokens.append(token)
        try:
            decision = run.wait_for_callback("approval")
        except CallbackTimeout:
            return {"report": report, "decision": "timed out"}
        except CallbackFailed as exc:
            return {"report": report, "decision": f"failed: {exc}"}
        calls["after"] += 1
        return {"report": report, "decision": decision}

    return handler


@pytest.mark.parametrize("faults", [Faults(), Faults("during"), Faults("after")], ids=str)
def test_a_run_waits_for_an_answer_then_carries_on(faults: Faults) -> None:
    calls: Counter[str] = Counter()
    tokens: list[str] = []
    store = MemoryStore()
    sim = LambdaSim(store="handler")
    waiting = sim.run(approval_job(store, calls, tokens), {"id": "a"}, faults=faults)
    assert waiting.status == "waiting"
    document = store.status("a")
    assert document["wait"]["kind"] == "callback" and document["wait"]["name"] == "approval"
    assert len(set(tokens)) == 1  # the same token on every hop and delivery
    done = sim.send_callback(tokens[0], {"approved": True}, store=store)
    assert done.status == "completed"
    assert done.result == {"report": "report-1", "decision": {"approved": True}}
    assert calls == Counter({"report": 1, "after": 1})
    assert len(set(tokens)) == 1
    # sending the same answer again is harmless; another answer is refused
    assert send_callback(tokens[0], {"approved": True}, store=store) == "already recorded"
    with pytest.raises(CallbackRefused, match="already answered differently"):
        send_callback(tokens[0], {"approved": False}, store=store)


def test_an_answer_before_the_wait_is_returned_at_once() -> None:
    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: "early")
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        token = run.callback("fast")
        send_callback(token, "already here", store=store)  # the outside system is quick
        return run.wait_for_callback("fast")

    outcome = LambdaSim(store="handler").run(handler, {})
    assert outcome.status == "completed" and outcome.result == "already here"
    assert [h.outcome for h in outcome.invocations] == ["completed"]


def test_an_answer_landing_while_the_hop_goes_waiting_is_not_lost(tmp_path: Path) -> None:
    """The answer is recorded after the hop looked for it and before its waiting write:
    the sender finds the run still running (no wake-up), so the hop hands on itself."""
    tokens: list[str] = []

    class AnswerDuringWaitWrite(FileStore):
        def replace(self, checkpoint: Any, token: Any, **kw: Any) -> Any:
            status = getattr(checkpoint, "status", None)
            if status is not None and status.value == "waiting" and tokens:
                send_callback(tokens[0], "in between", store=FileStore(tmp_path))
            return super().replace(checkpoint, token, **kw)

    store = AnswerDuringWaitWrite(tmp_path)

    @longrun(checkpoint=store, run_id=lambda e: "race")
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        tokens.append(run.callback("race"))
        return run.wait_for_callback("race")

    outcome = LambdaSim(store="handler").run(handler, {})
    assert outcome.status == "completed" and outcome.result == "in between"
    assert [h.outcome for h in outcome.invocations] == ["waiting", "completed"]


def test_no_answer_wakes_the_run_at_the_timeout() -> None:
    calls: Counter[str] = Counter()
    tokens: list[str] = []
    store = MemoryStore()
    sim = LambdaSim(store="handler")
    waiting = sim.run(approval_job(store, calls, tokens), {"id": "t", "timeout_s": 2 * HOUR})
    assert waiting.status == "waiting"
    done = sim.resume()  # nobody answers: virtual time skips to the timeout
    assert done.status == "completed" and done.result["decision"] == "timed out"
    assert sim.clock.now >= 2 * HOUR and calls["report"] == 1
    with pytest.raises(CallbackRefused, match="timed out before this answer"):
        send_callback(tokens[0], {"approved": True}, store=store)


def test_a_failure_answer_raises_callback_failed_in_the_handler() -> None:
    calls: Counter[str] = Counter()
    tokens: list[str] = []
    store = MemoryStore()
    sim = LambdaSim(store="handler")
    sim.run(approval_job(store, calls, tokens), {"id": "f"})
    done = sim.send_callback(tokens[0], error="rejected by finance", store=store)
    assert done.result["decision"] == "failed: callback 'approval' failed: rejected by finance"


def test_forged_foreign_and_garbage_tokens_are_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    tokens: list[str] = []
    calls: Counter[str] = Counter()
    sim = LambdaSim(store="handler")
    sim.run(approval_job(store, calls, tokens), {"id": "r-1"})
    sim.run(approval_job(store, calls, tokens), {"id": "r-2"})
    body = json.loads(base64.urlsafe_b64decode(tokens[0].split(".", 1)[1] + "=="))
    forged = "lrcb1." + base64.urlsafe_b64encode(
        json.dumps({**body, "s": "0" * 48}).encode()
    ).decode().rstrip("=")
    with pytest.raises(CallbackRefused, match="does not match a callback of run 'r-1'"):
        send_callback(forged, True, store=store)
    foreign = "lrcb1." + base64.urlsafe_b64encode(
        json.dumps({**body, "r": "r-2"}).encode()
    ).decode().rstrip("=")
    with pytest.raises(CallbackRefused, match="does not match a callback of run 'r-2'"):
        send_callback(foreign, True, store=store)
    for garbage in ("", "lrcb1.!!!", "hello", "lrcb1." + "A" * 3000, 42):
        with pytest.raises(CallbackRefused, match="is not a longrun callback token"):
            send_callback(garbage, True, store=store)  # type: ignore[arg-type]
    with pytest.raises(CallbackRefused, match="not plain JSON"):
        send_callback(tokens[0], {1, 2}, store=store)
    with pytest.raises(CallbackRefused, match="non-empty string"):
        fail_callback(tokens[0], "", store=store)
    assert not list((tmp_path / "r-1").glob("callbacks/*"))  # nothing was recorded
    assert store.status("r-1")["status"] == "waiting"


def test_longrun_callback_command_records_and_wakes_through_the_invoke_api(
    tmp_path: Path,
) -> None:
    from longrun.testing.invoke_endpoint import InvokeEndpoint

    store = FileStore(tmp_path)
    tokens: list[str] = []
    LambdaSim(store="handler").run(approval_job(store, Counter(), tokens), {"id": "cli"})
    with InvokeEndpoint() as endpoint:
        env = {**os.environ, "AWS_ENDPOINT_URL_LAMBDA": endpoint.url}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "longrun.cli", "--store", f"file://{tmp_path}", *args],
                capture_output=True, text=True, env=env, timeout=60,
            )  # fmt: skip

        bad = cli("callback", tokens[0], "--payload", "{not json")
        assert bad.returncode == 2 and "--payload '{not json' is not JSON" in bad.stderr
        done = cli("callback", tokens[0], "--payload", '{"approved": true}', "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"run_id": "cli", "callback": "approval",
                                           "answer": "recorded"}  # fmt: skip
        assert [e.json() for e in endpoint.events] == [
            {"longrun": {"v": 1, "run_id": "cli", "hop": 1}}
        ]
        again = cli("callback", tokens[0], "--payload", '{"approved": true}')
        assert again.returncode == 0 and "already recorded" in again.stdout
        other = cli("callback", tokens[0], "--fail", "no")
        assert other.returncode == 2 and "already answered differently" in other.stderr


def test_a_hand_edited_answer_is_refused_naming_the_object(tmp_path: Path) -> None:
    from longrun.callbacks import _answer_name

    store = FileStore(tmp_path)
    sim = LambdaSim(store="handler")
    sim.run(approval_job(store, Counter(), []), {"id": "h"})
    store.put_object(_answer_name("h", "approval"), b"not json at all")  # by hand
    outcome = sim.resume()  # the timeout's wake-up finds it
    assert outcome.status == "failed"
    assert "is not one longrun wrote" in str(outcome.invocations[-1].error)
    assert store.status("h")["steps"]["report"]["result"] == "report-1"  # nothing lost
