"""A committed checkpoint write whose reply was lost: S3 stored it, the writer never heard.

botocore resends a PutObject whose reply did not arrive. For a conditional write that had in
fact committed, the resend meets its own write and S3 answers 412: the writer sees a lost
condition although it won. A run must treat that as its own write and carry on: end
``completed`` with every item run once and the handler's own result returned.

The fault is real traffic against the moto server (``tests/faults.py``): botocore's retry path
resends the very same conditional request after its first attempt committed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from faults import LostReply, Write

from longrun import Fargate, S3Store, current_run, longrun
from longrun.testing import LambdaSim


@pytest.fixture
def longrun_sim(longrun_sim: LambdaSim) -> LambdaSim:
    """These tests read the handler's own store: the simulator uses it, not its in-memory one."""
    longrun_sim.store = "handler"
    return longrun_sim


PREFIX = "runs/"
ITEMS = 10
TARGET = Fargate(cluster="jobs", task_definition="worker:3", container="worker", subnets=["s-1"])


@pytest.fixture
def client(moto_server: str) -> Any:
    """A client of its own per test: the fault hook is registered on it."""
    return boto3.session.Session().client("s3", endpoint_url=moto_server, region_name="us-east-1")


@pytest.fixture
def bucket(client: Any) -> str:
    name = f"longrun-lost-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def _stored(client: Any, bucket: str, run_id: str) -> dict[str, Any]:
    body = client.get_object(Bucket=bucket, Key=f"{PREFIX}{run_id}/checkpoint.json")["Body"]
    document: dict[str, Any] = json.loads(body.read())
    return document


# -- the mechanism itself ---------------------------------------------------------------------


@pytest.mark.parametrize("condition", ["create", "replace"])
def test_the_hook_makes_the_resend_of_a_committed_write_meet_412(
    client: Any, bucket: str, condition: str
) -> None:
    key = f"{PREFIX}r1/checkpoint.json"
    extra: dict[str, str] = {"IfNoneMatch": "*"}
    if condition == "replace":
        etag = client.put_object(Bucket=bucket, Key=key, Body=b'{"status":"running"}')["ETag"]
        extra = {"IfMatch": etag}
    fault = LostReply(client, lambda w: True).install()
    body = json.dumps({"status": "continued", "n": 1}).encode()

    with pytest.raises(ClientError) as raised:
        client.put_object(Bucket=bucket, Key=key, Body=body, **extra)

    # The caller saw only the resend's 412 ...
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert raised.value.response["Error"]["Code"] == "PreconditionFailed"
    # ... although the first attempt committed: S3 holds this very body.
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    # Two identical conditional requests went on the wire, answered 200 then 412.
    puts = [s for s in fault.sent if s[0].endswith(key)]
    assert len(puts) == 2 and puts[0] == puts[1]
    assert puts[0][2] == body
    assert set(puts[0][1]) == {"if-none-match" if condition == "create" else "if-match"}
    [write] = fault.writes
    assert write.lost and write.statuses == [200, 412]
    assert write.kind == ("create" if condition == "create" else "continued")


def test_the_hook_names_each_write_and_drops_only_the_chosen_one(client: Any, bucket: str) -> None:
    key = f"{PREFIX}r2/checkpoint.json"
    fault = LostReply(client, lambda w: w.kind == "completed").install()
    etag = client.put_object(
        Bucket=bucket, Key=key, Body=b'{"status":"running","hops":[0]}', IfNoneMatch="*"
    )["ETag"]
    bodies = [
        b'{"status":"running","hops":[0]}',
        b'{"status":"continued","hops":[0]}',
        b'{"status":"running","hops":[0,1]}',
        b'{"status":"completed","hops":[0,1]}',
    ]
    for body in bodies[:-1]:
        etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=etag)["ETag"]
    with pytest.raises(ClientError):
        client.put_object(Bucket=bucket, Key=key, Body=bodies[-1], IfMatch=etag)

    assert fault.kinds() == ["create", "checkpoint", "continued", "claim", "completed"]
    assert [w.statuses for w in fault.writes] == [[200], [200], [200], [200], [200, 412]]
    assert [w.kind for w in fault.lost_writes()] == ["completed"]
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == bodies[-1]


# -- whole runs ---------------------------------------------------------------------------------


@dataclass
class Case:
    target: Callable[[Write], bool]
    options: dict[str, Any]
    fail_once_at_hop: int | None = None
    """Raise once, at the first item of this hop (nothing unsaved yet: a retry redoes nothing)."""
    handoff_fails_once_at_hop: int | None = None
    """The hand-off at the end of this hop fails once (after its "continued" write)."""


CASES: dict[str, Case] = {
    "create": Case(lambda w: w.kind == "create", {}),
    "claim": Case(lambda w: w.kind == "claim" and w.document.get("hop", 0) >= 1, {}),
    "checkpoint": Case(lambda w: w.kind == "checkpoint", {}),
    "continued": Case(lambda w: w.kind == "continued", {}),
    "completed": Case(lambda w: w.kind == "completed", {}),
    # The handler raises once; Lambda's retry resumes the run.
    "failed": Case(lambda w: w.kind == "failed", {}, fail_once_at_hop=1),
    # The hand-off fails once (HandoffFailed, retryable); Lambda's retry re-sends it.
    "failed-handoff": Case(lambda w: w.kind == "failed", {}, handoff_fails_once_at_hop=0),
    "escalated": Case(lambda w: w.kind == "escalated", {"escalate": TARGET, "max_hops": 1}),
}


def _job(store: S3Store, case: Case) -> tuple[Any, Counter[int], list[int]]:
    processed: Counter[int] = Counter()
    entries: list[int] = []
    pending_failure = [case.fail_once_at_hop]

    @longrun(checkpoint=store, checkpoint_every_s=2, **case.options)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        run = current_run()
        entries.append(run.hop)
        for i in run.iterate(range(event["n"])):
            if run.items_done() == 0 and pending_failure[0] == run.hop:
                pending_failure[0] = None
                raise RuntimeError(f"injected failure at the first item of hop {run.hop}")
            time.sleep(1)
            processed[i] += 1
            run.state["done"] = run.state.get("done", 0) + 1
        return {"done": run.state["done"]}

    return handler, processed, entries


def _fail_handoff_once(monkeypatch: pytest.MonkeyPatch, hop: int) -> None:
    """The simulator's hand-off of ``hop``'s successor raises once, as a throttled
    ``lambda.invoke`` would (the pattern of tests/test_escalation.py)."""
    from longrun.testing import sim as sim_module

    original = sim_module._SimHooks.invoke_async
    pending = [hop]

    def invoke_async(self: Any, function: str, payload: bytes, client: Any, **kw: Any) -> None:
        if pending and json.loads(payload)["longrun"]["hop"] == pending[0] + 1:
            pending.clear()
            raise RuntimeError("TooManyRequestsException: injected hand-off failure")
        original(self, function, payload, client, **kw)

    monkeypatch.setattr(sim_module._SimHooks, "invoke_async", invoke_async)


@pytest.mark.parametrize("kind", list(CASES))
def test_a_lost_reply_to_a_committed_write_loses_nothing(
    longrun_sim: LambdaSim,
    client: Any,
    bucket: str,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = CASES[kind]
    if case.handoff_fails_once_at_hop is not None:
        _fail_handoff_once(monkeypatch, case.handoff_fails_once_at_hop)
    fault = LostReply(client, case.target).install()
    handler, processed, _entries = _job(S3Store(bucket, PREFIX, client=client), case)

    outcome = longrun_sim.run(handler, {"n": ITEMS}, timeout_s=5)
    summary = f"{outcome.summary()}\nwrites: {fault.kinds()}"

    # The fault really happened: the chosen write committed, its resend met 412.
    lost = fault.lost_writes()
    assert [w.kind for w in lost] == [kind.split("-")[0]], summary
    assert lost[0].statuses == [200, 412], summary

    run_id = outcome.invocations[0].request_id
    stored = _stored(client, bucket, run_id)
    assert stored["status"] == "completed", summary
    assert stored["result"] == {"done": ITEMS}, summary
    assert processed == Counter(range(ITEMS)), summary  # every item exactly once
    # The caller of the completing invocation got the handler's own value, not a status.
    assert outcome.invocations[-1].response == {"done": ITEMS}, summary
    # A lost reply costs no invocation: nothing was refused, superseded or failed, apart from
    # the injected handler failure (and its Lambda retry).
    troubles = [
        (r.kind, r.hop, r.outcome, repr(r.error))
        for r in outcome.invocations
        if r.outcome not in ("continued", "completed") and "injected" not in str(r.error)
    ]
    assert troubles == [], summary
    assert len(outcome.hops) >= 3, summary  # the job really hopped
