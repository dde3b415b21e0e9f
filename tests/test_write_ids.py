"""A write that committed but failed on the way back (the store gave up after its own
retries) is recognised by its write id: the run carries on, every item exactly once.

tests/test_lost_reply.py covers botocore's resend meeting 412 on S3; this covers the other
ending of a lost reply, an error, on every write of a run, on real files.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from longrun import FileStore, StoreError, current_run, longrun
from longrun.testing import LambdaSim


class CommitsThenFails(FileStore):
    """A FileStore whose ``fail_at``-th conditional write commits, then raises StoreError."""

    def __init__(self, path: Path, fail_at: int) -> None:
        super().__init__(path)
        self.fail_at = fail_at
        self.writes = 0
        self.failed_status: str | None = None

    def _count(self, data: bytes) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            self.failed_status = json.loads(data)["status"]
            raise StoreError("injected: the write committed, then the connection reset")

    def _create(self, key: str, data: bytes) -> Any:
        token = super()._create(key, data)
        self._count(data)
        return token

    def _replace(self, key: str, data: bytes, token: Any) -> Any:
        new_token = super()._replace(key, data, token)
        self._count(data)
        return new_token


@pytest.mark.parametrize("fail_at", range(1, 10))  # the run makes 9 writes
def test_a_failed_reply_after_a_commit_is_recognised_on_every_write(
    tmp_path: Path, fail_at: int
) -> None:
    store = CommitsThenFails(tmp_path, fail_at)
    done: Counter[int] = Counter()

    @longrun(checkpoint=store, checkpoint_every_s=2)
    def handler(event: Any, context: Any) -> dict[str, int]:
        run = current_run()
        for i in run.iterate(range(12)):
            done[i] += 1
            run.state["n"] = run.state.get("n", 0) + 1
            time.sleep(1)  # virtual time in the simulator
        return {"n": run.state["n"]}

    outcome = LambdaSim(store="handler").run(handler, {}, timeout_s=5, retries=0)

    assert store.failed_status is not None, "the fault did not fire"
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == {"n": 12}
    assert [done[i] for i in range(12)] == [1] * 12
    assert [r.outcome for r in outcome.invocations if r.outcome == "error"] == []
    assert store.writes == 9  # the failed write was not repeated: it was recognised
