"""Completion notifications (``on_complete``) on moto SQS, SNS and EventBridge, and callables.

Runs are made by real hops in the simulator with duplicate deliveries and Lambda's retries
injected; what is asserted is what the queue ends up holding (every message, received until
the queue is empty), what the checkpoint records, and how often a callable was called.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from longrun import (
    LongrunConfigError,
    MemoryStore,
    NotificationFailed,
    current_run,
    longrun,
)
from longrun.stores.base import CheckpointStore
from longrun.testing import Faults, LambdaSim

REGION = "us-east-1"


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 clients made by longrun reach the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


def client(service: str, endpoint: str) -> Any:
    import boto3

    return boto3.session.Session().client(service, endpoint_url=endpoint, region_name=REGION)


def new_queue(endpoint: str, name: str, **attributes: str) -> str:
    sqs = client("sqs", endpoint)
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def drain(endpoint: str, url: str) -> list[dict[str, Any]]:
    """Every message in the queue (received and deleted until it is empty)."""
    sqs = client("sqs", endpoint)
    bodies: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = got.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def job(store: CheckpointStore, on_complete: Any, **options: Any) -> Any:
    ran: dict[int, int] = {}

    @longrun(
        checkpoint=store,
        run_id=lambda event: event["id"],
        on_complete=on_complete,
        min_margin_ms=1000,
        **options,
    )
    def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
        run = current_run()
        for i in run.iterate(range(event["items"])):
            ran[i] = ran.get(i, 0) + 1
            time.sleep(1.0)  # virtual: 4 items a hop
        return {"total": sum(range(event["items"]))}

    handler.ran = ran  # type: ignore[attr-defined]
    return handler


@pytest.mark.parametrize("duplicate", ["during", "after"])
def test_one_sqs_message_per_run_with_duplicate_deliveries(aws: str, duplicate: str) -> None:
    url = new_queue(aws, f"done-{duplicate}")
    store = MemoryStore()
    handler = job(store, url)
    outcome = LambdaSim(store="handler").run(
        handler, {"id": "j-1", "items": 10}, timeout_s=5.0, faults=Faults(duplicate)
    )
    assert outcome.status == "completed" and outcome.result == {"total": 45}
    assert set(handler.ran.values()) == {1} and len(handler.ran) == 10
    [message] = drain(aws, url)
    document = store.status("j-1")
    assert message == {
        "notification_id": f"j-1:completed:{document['hop']}",
        "run_id": "j-1",
        "status": "completed",
        "result": {"total": 45},
        "hops": document["hop"] + 1,
        "started_ms": document["created_ms"],
        "ended_ms": document["updated_ms"],
        "duration_ms": document["updated_ms"] - document["created_ms"],
        "function": document["function"],
    }
    assert document["notice"]["state"] == "sent" and document["notice"]["attempts"] == 1
    assert document["notice"]["target"] == f"sqs:{url}"


def test_sns_topic_delivers_once_to_its_subscribers(aws: str) -> None:
    url = new_queue(aws, "sns-subscriber")
    sns = client("sns", aws)
    topic = sns.create_topic(Name="runs-done")["TopicArn"]
    queue_arn = client("sqs", aws).get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    handler = job(MemoryStore(), topic)
    outcome = LambdaSim(store="handler").run(
        handler, {"id": "s-1", "items": 6}, timeout_s=5.0, faults=Faults("during")
    )
    assert outcome.status == "completed"
    [message] = drain(aws, url)
    assert (message["run_id"], message["status"], message["result"]) == (
        "s-1", "completed", {"total": 15},
    )  # fmt: skip


def test_eventbridge_bus_delivers_once_through_a_rule(aws: str) -> None:
    url = new_queue(aws, "bus-subscriber")
    events = client("events", aws)
    bus = events.create_event_bus(Name="jobs")["EventBusArn"]
    queue_arn = client("sqs", aws).get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events.put_rule(
        Name="runs-settled",
        EventBusName="jobs",
        EventPattern=json.dumps({"source": ["longrun"]}),
    )
    events.put_targets(
        Rule="runs-settled", EventBusName="jobs", Targets=[{"Id": "q", "Arn": queue_arn}]
    )
    handler = job(MemoryStore(), bus)
    outcome = LambdaSim(store="handler").run(
        handler, {"id": "e-1", "items": 6}, timeout_s=5.0, faults=Faults("after")
    )
    assert outcome.status == "completed"
    [event] = drain(aws, url)
    assert event["source"] == "longrun" and event["detail-type"] == "longrun run settled"
    assert event["detail"]["run_id"] == "e-1" and event["detail"]["result"] == {"total": 15}


def notify_client(address: str) -> Any:
    """The very client longrun sends to ``address`` with (one per process), for fault hooks."""
    from longrun.notify import _client, target_of

    target = target_of(address)
    return _client(target.kind, target.region)


def test_a_failed_notification_keeps_the_result_and_is_retried(aws: str) -> None:
    """SendMessage fails before it reaches SQS: the result is stored, the notice recorded
    failed, the invocation raises; Lambda's retry sends it, once, and re-runs no item."""
    url = new_queue(aws, "flaky")
    store = MemoryStore()
    failures: list[str] = []

    def fail_first(**_: Any) -> None:
        if not failures:
            failures.append(store.status("late")["status"])
            raise ConnectionError("injected: SQS unreachable")

    events = notify_client(url).meta.events
    events.register("before-call.sqs.SendMessage", fail_first)
    try:
        handler = job(store, url)
        outcome = LambdaSim(store="handler").run(handler, {"id": "late", "items": 6}, timeout_s=5.0)
    finally:
        events.unregister("before-call.sqs.SendMessage", fail_first)
    assert failures == ["completed"]  # the result was stored before the send
    assert outcome.status == "completed" and outcome.result == {"total": 15}
    [message] = drain(aws, url)
    assert message["run_id"] == "late" and message["status"] == "completed"
    notice = store.status("late")["notice"]
    assert (notice["state"], notice["attempts"], notice["error"]) == ("sent", 2, None)
    assert set(handler.ran.values()) == {1}  # the retry re-ran nothing
    errors = [type(r.error).__name__ for r in outcome.hops if r.error is not None]
    assert errors == ["NotificationFailed"]


@pytest.mark.parametrize("fifo", [True, False])
def test_a_lost_reply_sends_twice_under_one_id_and_a_fifo_queue_keeps_one(
    aws: str, fifo: bool
) -> None:
    """SQS took the message but its reply was lost: the sender records a failure and the
    retry sends again, with the same notification id. A FIFO queue drops the repeat by its
    deduplication id; a standard queue holds both, for the receiver to drop."""
    name = "lost-reply.fifo" if fifo else "lost-reply"
    url = new_queue(aws, name, **({"FifoQueue": "true"} if fifo else {}))
    lost: list[bool] = []

    def lose_reply(**_: Any) -> None:
        if not lost:
            lost.append(True)
            raise ConnectionError("injected: the reply was lost")

    events = notify_client(url).meta.events
    events.register("after-call.sqs.SendMessage", lose_reply)
    try:
        outcome = LambdaSim(store="handler").run(
            job(MemoryStore(), url), {"id": "lr", "items": 3}, timeout_s=5.0
        )
    finally:
        events.unregister("after-call.sqs.SendMessage", lose_reply)
    assert outcome.status == "completed" and lost
    messages = drain(aws, url)
    assert {m["notification_id"] for m in messages} == {"lr:completed:0"}
    assert len(messages) == (1 if fifo else 2)


def test_a_callable_is_called_once_even_when_it_failed_first() -> None:
    calls: list[dict[str, Any]] = []

    def tell(message: dict[str, Any]) -> None:
        calls.append(message)
        if len(calls) == 1:
            raise ConnectionError("receiver down")

    store = MemoryStore()
    outcome = LambdaSim(store="handler").run(
        job(store, tell), {"id": "c-1", "items": 9}, timeout_s=5.0, faults=Faults("during")
    )
    assert outcome.status == "completed"
    assert [c["status"] for c in calls] == ["completed", "completed"]
    assert calls[0]["notification_id"] == calls[1]["notification_id"]
    notice = store.status("c-1")["notice"]
    assert notice["state"] == "sent" and notice["attempts"] == 2


def test_a_run_that_fails_for_good_is_notified_once(aws: str) -> None:
    url = new_queue(aws, "failures")
    store = MemoryStore()
    outcome = LambdaSim(store="handler").run(
        job(store, url, max_hops=1), {"id": "f-1", "items": 40}, timeout_s=5.0,
        faults=Faults("after"),
    )  # fmt: skip
    assert outcome.status == "failed"
    [message] = drain(aws, url)
    assert message["status"] == "failed" and message["error"]["type"] == "HopBudgetExhausted"
    assert "result" not in message


def test_a_failure_lambda_retries_is_not_notified(aws: str) -> None:
    """A handler error in Lambda is retried (then taken on by the safety net): the run has not
    ended, so nothing is sent."""
    url = new_queue(aws, "not-yet")

    @longrun(checkpoint=MemoryStore(), run_id=lambda e: e["id"], on_complete=url)
    def broken(event: Any, context: Any) -> None:
        raise ValueError("bug")

    outcome = LambdaSim(store="handler").run(broken, {"id": "b-1"}, timeout_s=5.0)
    assert outcome.status == "failed"
    assert drain(aws, url) == []


def test_bad_targets_are_refused_at_decoration() -> None:
    for bad in ("arn:aws:sqs:us-east-1:123456789012:q", "my-topic", 42):
        with pytest.raises(LongrunConfigError, match="is not a notification target"):
            longrun(checkpoint=MemoryStore(), on_complete=bad)(lambda e, c: None)


def test_notification_failed_is_a_longrun_error() -> None:
    from longrun import LongrunError

    assert issubclass(NotificationFailed, LongrunError)


NOTIFIED_APP = """
import os
import time

from longrun import current_run, longrun


@longrun(run_id=lambda event: event["id"], on_complete=os.environ["DONE_URL"], margin_ms=600)
def handler(event, context):
    run = current_run()
    for item in run.iterate(range(event["items"])):
        print(f"item {item}", flush=True)
        time.sleep(0.1)
    return {"items": event["items"]}
"""


def test_real_hop_processes_with_every_event_delivered_twice_send_one_message(
    longrun_local: Any, tmp_path: Any
) -> None:
    """The emulator: awslambdaric processes, hops through its Invoke API, every event
    delivered twice; the queue lives in the emulator's moto server."""
    (tmp_path / "notified.py").write_text(NOTIFIED_APP)
    endpoint = longrun_local.moto.url  # started on first use
    url = new_queue(endpoint, "emulated-done")
    fn = longrun_local.deploy(
        f"{tmp_path / 'notified.py'}:handler",
        name="notified",
        timeout_s=1.6,
        store="s3",
        escalate=False,
        duplicate_rate=1.0,
        env={"DONE_URL": url},
    )
    longrun_local.invoke(fn, {"id": "em-1", "items": 24})
    report = longrun_local.wait(timeout=120)
    records = [r for r in report.invocations if r.run_id == "em-1"]
    assert any(r.kind == "duplicate" for r in records)
    items = [int(line.split()[1]) for r in records for line in r.log if line.startswith("item ")]
    assert sorted(items) == list(range(24))  # each item once
    [message] = drain(endpoint, url)
    assert (message["run_id"], message["status"], message["result"]) == (
        "em-1", "completed", {"items": 24},
    )  # fmt: skip
    assert message["hops"] >= 2


def test_a_hand_edited_notice_is_refused_naming_the_field(tmp_path: Any) -> None:
    from longrun import CheckpointCorrupt, FileStore

    store = FileStore(tmp_path)
    LambdaSim(store="handler").run(job(store, lambda message: None), {"id": "h", "items": 2})
    path = tmp_path / "h" / "checkpoint.json"
    document = json.loads(path.read_text())
    assert document["notice"]["state"] == "sent"
    document["notice"]["state"] = "delivered-probably"
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointCorrupt, match=r"notice\.state: 'delivered-probably'") as info:
        store.load("h")
    assert info.value.field == "notice.state"
