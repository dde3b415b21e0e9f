"""The safety net against real components: boto3 against moto's S3, ECS and EC2.

Failed runs are produced by the simulator (a hop-budget failure, a hop killed at its deadline
with no retries left), then their failure records are fed to ``longrun.safety_net.handler``
in every shape AWS delivers them: an SQS or SNS on-failure destination, the safety net as the
Lambda destination itself, and SQS / SNS dead-letter messages. The assertions read what the
real components hold afterwards: checkpoint documents in S3, tasks in ECS, stored events.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from longrun import S3Store, current_run, longrun, ports, safety_net
from longrun import config as longrun_config
from longrun.handoff import fargate
from longrun.runner import _load_event
from longrun.testing import LambdaSim, VirtualClock
from longrun.testing.sim import Outcome

ACCOUNT = "123456789012"
FUNCTION = "etl-job"
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{FUNCTION}"
PLAIN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:plain-job"
QUEUE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:safety-net"
TOPIC_ARN = f"arn:aws:sns:us-east-1:{ACCOUNT}:safety-net"


@dataclass
class Aws:
    s3: Any
    ecs: Any
    bucket: str
    cluster: str
    monkeypatch: pytest.MonkeyPatch

    def checkpoint(self, run_id: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=self.bucket, Key=f"longrun/{run_id}/checkpoint.json")
        return json.loads(body["Body"].read())  # type: ignore[no-any-return]

    def task(self, arn: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The ECS task as moto holds it, and its container override environment."""
        tasks = self.ecs.describe_tasks(cluster=self.cluster, tasks=[arn], include=["TAGS"])
        task = tasks["tasks"][0]
        (override,) = task["overrides"]["containerOverrides"]
        assert override["name"] == "worker"
        return task, {e["name"]: e["value"] for e in override["environment"]}

    def tasks(self) -> list[str]:
        return list(self.ecs.list_tasks(cluster=self.cluster)["taskArns"])


@pytest.fixture
def aws(moto_server: str, s3_client: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """An ECS cluster, a Fargate task definition, a VPC and subnet, a checkpoint bucket, and the
    safety-net function's environment naming them (default clients reach moto through
    AWS_ENDPOINT_URL, as a deployed function reaches AWS)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setattr(fargate, "_clients", {})  # no ECS client cached for another endpoint
    monkeypatch.setattr(longrun_config, "_store_cache", {})
    session = boto3.session.Session(region_name="us-east-1")
    ecs = session.client("ecs", endpoint_url=moto_server)
    ec2 = session.client("ec2", endpoint_url=moto_server)
    suffix = uuid.uuid4().hex[:8]
    cluster = f"jobs-{suffix}"
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family=f"worker-{suffix}",
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        requiresCompatibilities=["FARGATE"],
        # moto sums container-level cpu/memory: give them (real ECS takes the task's alone)
        containerDefinitions=[
            {"name": "worker", "image": "longrun-runner:latest", "cpu": 256, "memory": 512}
        ],
    )
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # moto 5.2.5 reads an ENI's private DNS name, which exists only with DNS hostnames on
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"sg-{suffix}", Description="tasks", VpcId=vpc)
    for name, value in {
        "LONGRUN_CHECKPOINT_URI": f"s3://{bucket}/longrun/",
        "LONGRUN_FARGATE_CLUSTER": cluster,
        "LONGRUN_FARGATE_TASK_DEFINITION": f"worker-{suffix}",
        "LONGRUN_FARGATE_CONTAINER": "worker",
        "LONGRUN_FARGATE_SUBNETS": subnet,
        # moto requires security groups on awsvpc tasks (ECS itself would use the default)
        "LONGRUN_FARGATE_SECURITY_GROUPS": group["GroupId"],
    }.items():
        monkeypatch.setenv(name, value)
    return Aws(s3_client, ecs, bucket, cluster, monkeypatch)


# -- failed runs, made by the simulator ---------------------------------------------------------


def job(aws: Aws, n: int, *, seconds: float = 60.0, stuck_item: int | None = None) -> Any:
    @longrun(checkpoint=S3Store(aws.bucket, prefix="longrun/", client=aws.s3), escalate=False)
    def handler(event: Any, context: Any) -> dict[str, Any]:
        run = current_run()
        for i in run.iterate(range(n)):
            time.sleep(3600 if i == stuck_item else seconds)  # virtual time in the simulator
            run.state["done"] = run.state.get("done", 0) + 1
        return {"done": run.state.get("done", 0)}

    return handler


def simulate(handler: Any, event: Any, *, epoch_offset_s: float = -3600.0, **kw: Any) -> Outcome:
    """Run on a virtual clock that starts ``epoch_offset_s`` from now (claims expire or not)."""
    sim = LambdaSim(VirtualClock(start_epoch_s=time.time() + epoch_offset_s), store="handler")
    return sim.run(handler, event, timeout_s=300, retries=0, function_name=FUNCTION, **kw)


def exhausted_run(aws: Aws) -> Outcome:
    """Fails with HopBudgetExhausted at hop 1; the dead letter is hop 1's envelope."""
    outcome = simulate(job(aws, 40), {"job": "exhausted"}, settings={"max_hops": 1})
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error["type"] == "HopBudgetExhausted"
    assert outcome.dead_letters[0].event == {
        "longrun": {"v": 1, "run_id": outcome.run_id, "hop": 1}
    }
    return outcome


def killed_run(aws: Aws, *, epoch_offset_s: float = -3600.0) -> Outcome:
    """Hop 0 killed at its deadline inside item 2 (no retries): left ``running``. Its claim
    expired an hour ago, or (with a positive offset) is still live."""
    outcome = simulate(
        job(aws, 5, seconds=1, stuck_item=2), {"job": "killed"}, epoch_offset_s=epoch_offset_s
    )
    assert [r.outcome for r in outcome.invocations] == ["killed"]
    assert outcome.status == "running"
    # The default run id is the first invocation's request id: the dead letter's RequestID.
    assert outcome.dead_letters[0].request_id == outcome.run_id
    return outcome


# -- records, as AWS delivers them ----------------------------------------------------------------


def destination_record(
    payload: Any, request_id: str, *, function: str = ARN, condition: str = "RetriesExhausted"
) -> dict[str, Any]:
    """An asynchronous invocation's on-failure destination record."""
    return {
        "version": "1.0",
        "timestamp": "2026-11-22T10:00:00.000Z",
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{function}:$LATEST",
            "condition": condition,
            "approximateInvokeCount": 3,
        },
        "requestPayload": payload,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {
            "errorMessage": "2026-11-22T10:00:00.000Z Task timed out after 300.00 seconds"
        },
    }


def dlq_attributes(request_id: str) -> dict[str, str]:
    return {"RequestID": request_id, "ErrorCode": "200", "ErrorMessage": "Task timed out"}


def sqs_record(body: Any, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": text,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795341600000",
            "SenderId": "AROAEXAMPLE:etl-job",
            "ApproximateFirstReceiveTimestamp": "1795341600001",
        },
        "messageAttributes": {
            name: {
                "stringValue": value,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Number" if name == "ErrorCode" else "String",
            }
            for name, value in (attributes or {}).items()
        },
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def sns_record(message: Any, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    text = message if isinstance(message, str) else json.dumps(message)
    return {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": f"{TOPIC_ARN}:{uuid.uuid4()}",
        "Sns": {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": TOPIC_ARN,
            "Subject": None,
            "Message": text,
            "Timestamp": "2026-11-22T10:00:00.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/cert.pem",
            "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {
                name: {"Type": "Number" if name == "ErrorCode" else "String", "Value": value}
                for name, value in (attributes or {}).items()
            },
        },
    }


def actions(summary: dict[str, Any]) -> list[str]:
    return [r["action"] for r in summary["results"]]


def assert_escalated(aws: Aws, result: dict[str, Any], run_id: str, hop: int) -> None:
    """The checkpoint says escalated to ``hop`` with the task ECS holds, which resumes it."""
    assert result["action"] == "escalated" and result["run_id"] == run_id
    assert result["hop"] == hop
    doc = aws.checkpoint(run_id)
    assert doc["status"] == "escalated" and doc["next"] == "fargate" and doc["claim"] is None
    assert doc["escalation"]["hop"] == hop
    assert doc["escalation"]["task_arn"] == result["task_arn"]
    assert doc["escalation"]["reason"].startswith("safety net: ")
    task, env = aws.task(result["task_arn"])
    assert env == {"LONGRUN_RUN_ID": run_id, "LONGRUN_HOP": str(hop)}
    assert task["startedBy"] == "longrun" and task["launchType"] == "FARGATE"
    assert {t["key"]: t["value"] for t in task["tags"]} == {
        "longrun:run-id": run_id,
        "longrun:hop": str(hop),
    }


# -- tests ----------------------------------------------------------------------------------------


def test_sqs_batch_of_every_kind(aws: Aws, caplog: pytest.LogCaptureFixture) -> None:
    exhausted = exhausted_run(aws)
    killed = killed_run(aws)
    live = killed_run(aws, epoch_offset_s=+3600.0)
    assert exhausted.run_id and killed.run_id and live.run_id
    exhausted_hop = aws.checkpoint(exhausted.run_id)["hop"]
    assert exhausted_hop == 1
    corrupt = str(uuid.uuid4())
    aws.s3.put_object(Bucket=aws.bucket, Key=f"longrun/{corrupt}/checkpoint.json", Body=b"{oops")
    plain_request = str(uuid.uuid4())
    aws.monkeypatch.setenv("LONGRUN_SAFETY_NET_FUNCTION", PLAIN)
    letter = exhausted.dead_letters[0]
    records = [
        # 0: on-failure destination (SQS) of hop 1 of the exhausted run: an envelope
        sqs_record(destination_record(letter.event, letter.request_id)),
        # 1: dead letter (SQS) of hop 0 of the killed run: the original event + RequestID
        sqs_record(killed.dead_letters[0].event, dlq_attributes(killed.run_id)),
        # 2: not JSON
        sqs_record("this is not json {"),
        # 3: an event source mapping's failure record: nothing to resume
        sqs_record(
            {
                "version": "1.0",
                "timestamp": "2026-11-22T10:00:00.000Z",
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": ARN,
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 3,
                },
                "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
                "KinesisBatchInfo": {"shardId": "shardId-000000000000", "batchSize": 10},
            }
        ),
        # 4: dead letter for a run whose hop is still live under ANOTHER request (its
        # claim has not expired): left alone
        sqs_record(
            {"longrun": {"v": 1, "run_id": live.run_id, "hop": 0}},
            dlq_attributes("another-request"),
        ),
        # 5: a run whose checkpoint cannot be read: a failure SQS should deliver again
        sqs_record({"job": "corrupt"}, dlq_attributes(corrupt)),
        # 6: dead letter of an undecorated function (its name comes from the environment)
        sqs_record({"order": 42, "items": ["a", "b"]}, dlq_attributes(plain_request)),
    ]

    with caplog.at_level(logging.INFO, logger="longrun.safety_net"):
        summary = safety_net.handler({"Records": records}, None)

    assert actions(summary) == [
        "escalated",
        "escalated",
        "malformed",
        "malformed",
        "error",
        "error",
        "started",
    ]
    # Only the records that failed for a reason redelivery can cure go back to SQS: the live
    # claim (its lease decides) and the unreadable checkpoint.
    assert summary["batchItemFailures"] == [
        {"itemIdentifier": records[4]["messageId"]},
        {"itemIdentifier": records[5]["messageId"]},
    ]
    results = summary["results"]
    assert [r["message_id"] for r in results] == [r["messageId"] for r in records]
    assert_escalated(aws, results[0], exhausted.run_id, hop=exhausted_hop + 1)
    assert "RetriesExhausted after 3 attempt(s)" in results[0]["reason"]
    assert_escalated(aws, results[1], killed.run_id, hop=1)
    assert aws.checkpoint(killed.run_id)["escalation"]["reason"] == (
        "safety net: dead letter: 200 Task timed out"
    )
    assert "not JSON" in results[2]["reason"]
    assert "no requestPayload" in results[3]["reason"]
    assert live.run_id in results[4]["reason"]
    assert "hop 0 is running under request" in results[4]["reason"]
    assert aws.checkpoint(live.run_id)["status"] == "running"  # left alone
    assert "CheckpointCorrupt" in results[5]["reason"]

    started = results[6]
    key = f"longrun/safety-net/{plain_request}.json"
    assert started["event_uri"] == f"s3://{aws.bucket}/{key}"
    stored = json.loads(aws.s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read())
    assert stored == {"order": 42, "items": ["a", "b"]}
    assert _load_event(started["event_uri"]) == stored  # what the runner will read
    task, env = aws.task(started["task_arn"])
    assert env == {"LONGRUN_FUNCTION_NAME": PLAIN, "LONGRUN_EVENT_URI": started["event_uri"]}
    assert task["startedBy"] == "longrun"
    assert {t["key"]: t["value"] for t in task["tags"]} == {"longrun:request-id": plain_request}
    # Exactly the three tasks reported, nothing for the skipped, malformed or failed records.
    assert sorted(aws.tasks()) == sorted(results[i]["task_arn"] for i in (0, 1, 6))

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "longrun.safety_net"]
    assert [line["longrun_safety_net"] for line in lines] == actions(summary)
    assert [line["record"] for line in lines] == list(range(7))
    assert {r.levelname for r in caplog.records if "malformed" in r.getMessage()} == {"WARNING"}

    # SQS delivers the batch again (at-least-once): nothing starts twice.
    again = safety_net.handler({"Records": [records[0], records[1], records[6]]}, None)
    assert actions(again) == ["skipped", "skipped", "skipped"]
    assert again["results"][0]["reason"] == f"already escalated to {results[0]['task_arn']}"
    assert again["results"][2]["reason"] == f"already started as {started['task_arn']}"
    assert again["batchItemFailures"] == []
    assert len(aws.tasks()) == 3


def test_sns_lambda_and_eventbridge_shapes(aws: Aws) -> None:
    exhausted = exhausted_run(aws)
    killed = killed_run(aws)
    done = simulate(job(aws, 3, seconds=1), {"job": "done"})
    assert done.status == "completed" and done.run_id
    assert exhausted.run_id and killed.run_id
    letter = exhausted.dead_letters[0]

    # SNS on-failure destination: the record is the SNS message.
    sns = safety_net.handler(
        {"Records": [sns_record(destination_record(letter.event, letter.request_id))]}, None
    )
    assert actions(sns) == ["escalated"] and sns["batchItemFailures"] == []
    assert sns["results"][0]["source"] == "sns"
    assert_escalated(aws, sns["results"][0], exhausted.run_id, hop=2)

    # The safety net as the Lambda on-failure destination: the event is the record.
    direct = safety_net.handler(
        destination_record(killed.dead_letters[0].event, killed.run_id), None
    )
    assert actions(direct) == ["escalated"] and direct["results"][0]["source"] == "lambda"
    assert_escalated(aws, direct["results"][0], killed.run_id, hop=1)

    # A completed run: reported, not an error, not touched.
    finished = safety_net.handler(destination_record({"job": "done"}, done.run_id), None)
    assert actions(finished) == ["skipped"]
    assert finished["results"][0]["reason"] == "the run is completed"
    assert aws.checkpoint(done.run_id)["status"] == "completed"

    # An undecorated function behind an SNS dead-letter topic, and behind an EventBridge
    # destination (the function ARN from the record, qualifier included).
    aws.monkeypatch.setenv("LONGRUN_SAFETY_NET_FUNCTION", "plain-job")
    dlq_id, bridge_id = str(uuid.uuid4()), str(uuid.uuid4())
    plain_dlq = safety_net.handler(
        {"Records": [sns_record({"n": 1}, dlq_attributes(dlq_id))]}, None
    )
    bridge = safety_net.handler(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Lambda Function Invocation Result - Failure",
            "source": "lambda",
            "account": ACCOUNT,
            "time": "2026-11-22T10:00:00Z",
            "region": "us-east-1",
            "resources": [f"{PLAIN}:$LATEST"],
            "detail": destination_record({"n": 2}, bridge_id, function=PLAIN),
        },
        None,
    )
    assert actions(plain_dlq) == ["started"] and actions(bridge) == ["started"]
    _, env = aws.task(plain_dlq["results"][0]["task_arn"])
    assert env["LONGRUN_FUNCTION_NAME"] == "plain-job"
    assert _load_event(env["LONGRUN_EVENT_URI"]) == {"n": 1}
    _, env = aws.task(bridge["results"][0]["task_arn"])
    assert env["LONGRUN_FUNCTION_NAME"] == f"{PLAIN}:$LATEST"
    assert env["LONGRUN_EVENT_URI"].endswith(f"/longrun/safety-net/{bridge_id}.json")
    assert _load_event(env["LONGRUN_EVENT_URI"]) == {"n": 2}

    # Shapes that are not failures of an asynchronous invocation: logged, dropped, no raise.
    rubbish = safety_net.handler({"Records": [sns_record("<html>")]}, None)
    assert actions(rubbish) == ["malformed"] and "not JSON" in rubbish["results"][0]["reason"]
    unknown = safety_net.handler({"detail": "?"}, None)
    assert actions(unknown) == ["malformed"]
    kinesis = safety_net.handler({"Records": [{"eventSource": "aws:kinesis"}]}, None)
    assert actions(kinesis) == ["malformed"] and "aws:kinesis" in kinesis["results"][0]["reason"]
    success = safety_net.handler(
        destination_record({"n": 3}, str(uuid.uuid4()), condition="Success"), None
    )
    assert actions(success) == ["malformed"] and "on-success" in success["results"][0]["reason"]
    bad_envelope = safety_net.handler(
        destination_record({"longrun": {"v": 1, "run_id": "../x", "hop": 0}}, "r-1"), None
    )
    assert actions(bad_envelope) == ["malformed"]
    assert len(aws.tasks()) == 4


def test_store_errors_are_redelivered_not_malformed(aws: Aws) -> None:
    exhausted = exhausted_run(aws)
    letter = exhausted.dead_letters[0]
    aws.monkeypatch.setenv("LONGRUN_CHECKPOINT_URI", f"s3://no-such-bucket-{uuid.uuid4().hex}/x/")
    records = [
        sqs_record(destination_record(letter.event, letter.request_id)),
        sqs_record("{not json"),
        sqs_record({"plain": True}, dlq_attributes(str(uuid.uuid4()))),
    ]

    summary = safety_net.handler({"Records": records}, None)

    assert actions(summary) == ["error", "malformed", "error"]
    assert summary["batchItemFailures"] == [
        {"itemIdentifier": records[0]["messageId"]},
        {"itemIdentifier": records[2]["messageId"]},
    ]
    assert all("StoreError" in summary["results"][i]["reason"] for i in (0, 2))
    assert aws.tasks() == []
    # The same failure from SNS or a destination raises, so that Lambda retries the event.
    with pytest.raises(safety_net.SafetyNetError, match="StoreError"):
        safety_net.handler({"Records": [sns_record(letter.event, dlq_attributes("r-2"))]}, None)
    with pytest.raises(safety_net.SafetyNetError):
        safety_net.handler(destination_record(letter.event, letter.request_id), None)


def test_ecs_failure_is_retried_and_the_retry_escalates(aws: Aws) -> None:
    killed = killed_run(aws)
    assert killed.run_id
    record = sqs_record(killed.dead_letters[0].event, dlq_attributes(killed.run_id))
    cluster = aws.cluster
    aws.monkeypatch.setenv("LONGRUN_FARGATE_CLUSTER", f"missing-{uuid.uuid4().hex[:6]}")

    failed = safety_net.handler({"Records": [record]}, None)

    assert actions(failed) == ["error"] and "EscalationFailed" in failed["results"][0]["reason"]
    assert failed["batchItemFailures"] == [{"itemIdentifier": record["messageId"]}]
    doc = aws.checkpoint(killed.run_id)
    assert doc["status"] == "escalated" and doc["escalation"]["task_arn"] is None

    aws.monkeypatch.setenv("LONGRUN_FARGATE_CLUSTER", cluster)
    retried = safety_net.handler({"Records": [record]}, None)  # SQS's redelivery
    assert_escalated(aws, retried["results"][0], killed.run_id, hop=1)
    assert retried["batchItemFailures"] == []


def test_undecorated_event_in_a_file_store(aws: Aws, tmp_path: Path) -> None:
    aws.monkeypatch.setenv("LONGRUN_CHECKPOINT_URI", (tmp_path / "efs dir").as_uri())
    request_id = str(uuid.uuid4())
    record = destination_record({"path": "/data/x"}, request_id, function=PLAIN)

    summary = safety_net.handler({"Records": [sqs_record(record)]}, None)

    (result,) = summary["results"]
    assert result["action"] == "started"
    path = tmp_path / "efs dir" / "safety-net" / f"{request_id}.json"
    assert result["event_uri"] == path.as_uri()
    assert json.loads(path.read_text()) == {"path": "/data/x"}
    assert _load_event(result["event_uri"]) == {"path": "/data/x"}
    _, env = aws.task(result["task_arn"])
    assert env == {"LONGRUN_FUNCTION_NAME": f"{PLAIN}:$LATEST", "LONGRUN_EVENT_URI": path.as_uri()}
    marker = json.loads((path.parent / f"{request_id}.task.json").read_text())
    assert marker["task_arn"] == result["task_arn"]
    # A second delivery of the same failure: no second task.
    assert actions(safety_net.handler({"Records": [sqs_record(record)]}, None)) == ["skipped"]
    assert len(aws.tasks()) == 1


def test_dead_letter_of_an_unknown_function_needs_its_name(aws: Aws) -> None:
    record = sqs_record({"n": 1}, dlq_attributes(str(uuid.uuid4())))

    summary = safety_net.handler({"Records": [record]}, None)

    assert actions(summary) == ["error"]
    assert "LONGRUN_SAFETY_NET_FUNCTION" in summary["results"][0]["reason"]
    assert summary["batchItemFailures"] == [{"itemIdentifier": record["messageId"]}]
    assert aws.tasks() == []
    listing = aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix="longrun/safety-net/")
    assert listing.get("KeyCount") == 0  # nothing stored, no fence left behind


def test_live_claim_of_the_failed_request_is_left_to_its_lease(aws: Aws) -> None:
    """A hop that died early (out of memory) and a duplicate delivery of a live hop both
    reach the safety net with a live claim: they cannot be told apart, so the claim is never
    taken over while its lease runs. The record fails (SQS delivers it again); once the lease
    has expired, the redelivery resumes the run."""
    live = killed_run(aws, epoch_offset_s=+3600.0)
    assert live.run_id
    before = aws.checkpoint(live.run_id)
    record = sqs_record(live.dead_letters[0].event, dlq_attributes(live.run_id))

    summary = safety_net.handler({"Records": [record]}, None)

    assert actions(summary) == ["error"]
    assert "not taken over while the lease is live" in summary["results"][0]["reason"]
    assert summary["batchItemFailures"] == [{"itemIdentifier": record["messageId"]}]
    assert aws.tasks() == []
    assert aws.checkpoint(live.run_id) == before  # the live hop is not disturbed

    class Later(ports.Clock):  # two hours on: the lease has expired
        def wall_ms(self) -> int:
            return super().wall_ms() + 7_200_000

    with ports.installed(clock=Later()):
        summary = safety_net.handler({"Records": [record]}, None)
    [result] = summary["results"]
    assert_escalated(aws, result, live.run_id, hop=1)


# -- a Fargate task that stopped without handing the run on (an EventBridge rule) -------------


def task_stopped_event(
    aws: Aws, task_id: str, run_id: str | None, hop: int, *, exit_code: int | None
) -> dict[str, Any]:
    """EventBridge's ``ECS Task State Change`` for a STOPPED task, as the rule delivers it."""
    env = [] if run_id is None else [
        {"name": "LONGRUN_RUN_ID", "value": run_id},
        {"name": "LONGRUN_HOP", "value": str(hop)},
    ]  # fmt: skip
    container: dict[str, Any] = {"name": "worker", "lastStatus": "STOPPED"}
    if exit_code is not None:
        container["exitCode"] = exit_code
    stop_code = "TaskFailedToStart" if exit_code is None else "EssentialContainerExited"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "123456789012",
        "region": "us-east-1",
        "detail": {
            "clusterArn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{aws.cluster}",
            "taskArn": f"arn:aws:ecs:us-east-1:123456789012:task/{aws.cluster}/{task_id}",
            "lastStatus": "STOPPED",
            "startedBy": "longrun",
            "stopCode": stop_code,
            "stoppedReason": "OutOfMemoryError: Container killed due to memory usage"
            if exit_code
            else "CannotPullContainerError: pull image manifest has been retried 5 time(s)",
            "containers": [container],
            "overrides": {"containerOverrides": [{"name": "worker", "environment": env}]},
        },
    }


def put_checkpoint(aws: Aws, run_id: str, **changes: Any) -> None:
    from longrun.protocol import Checkpoint, HopEntry, Status

    store = S3Store(aws.bucket, prefix="longrun/", client=aws.s3)
    now = int(time.time() * 1000)
    base = Checkpoint(
        run_id=run_id,
        status=Status.RUNNING,
        hop=3,
        created_ms=now - 600_000,
        updated_ms=now - 60_000,
        event={"job": "stranded"},
        state={"done": 7},
        cursors={},
        hops=(HopEntry(3, 1, "fargate", "fargate-old", started_ms=now - 60_000),),
    )
    store.create(base.replace(**changes))


def test_a_task_that_never_started_is_replaced(aws: Aws) -> None:
    from longrun.protocol import Escalation, Status

    run_id, dead = f"run-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    arn = f"arn:aws:ecs:us-east-1:123456789012:task/{aws.cluster}/{dead}"
    put_checkpoint(aws, run_id, status=Status.ESCALATED, escalation=Escalation("budget", 4, arn))

    summary = safety_net.handler(task_stopped_event(aws, dead, run_id, 4, exit_code=None), None)

    [result] = summary["results"]
    assert result["source"] == "eventbridge"
    assert_escalated(aws, result, run_id, hop=4)
    assert "CannotPullContainerError" in aws.checkpoint(run_id)["escalation"]["reason"]


def test_a_task_killed_while_holding_its_lease_is_taken_over_at_once(aws: Aws) -> None:
    """The task claimed hop 4 (a lease 10 minutes long) and was OOM-killed: ECS says it is
    STOPPED, so its live-looking claim is dead and the run carries on in a new task."""
    from longrun.protocol import Claim

    run_id, dead = f"run-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    lease = int(time.time() * 1000) + 600_000
    put_checkpoint(aws, run_id, hop=4, claim=Claim(f"fargate-{dead}", lease, "fargate"))
    event = task_stopped_event(aws, dead, run_id, 4, exit_code=137)

    summary = safety_net.handler({"Records": [sqs_record(event)]}, None)  # via the queue

    [result] = summary["results"]
    assert summary["batchItemFailures"] == []
    assert_escalated(aws, result, run_id, hop=5)
    assert aws.checkpoint(run_id)["state"] == {"done": 7}  # the last checkpoint, kept


def test_a_stopped_task_never_takes_over_another_live_holder(aws: Aws) -> None:
    from longrun.protocol import Claim

    run_id, dead, alive = f"run-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, uuid.uuid4().hex
    lease = int(time.time() * 1000) + 600_000
    put_checkpoint(aws, run_id, hop=4, claim=Claim(f"fargate-{alive}", lease, "fargate"))
    before = aws.checkpoint(run_id)
    record = sqs_record(task_stopped_event(aws, dead, run_id, 4, exit_code=137))

    summary = safety_net.handler({"Records": [record]}, None)

    assert actions(summary) == ["error"]  # busy: comes back, decided by the live lease
    assert summary["batchItemFailures"] == [{"itemIdentifier": record["messageId"]}]
    assert aws.checkpoint(run_id) == before
    assert aws.tasks() == []


@pytest.mark.parametrize("case", ["exit-0", "not-longrun", "running"])
def test_task_events_that_ask_for_nothing_are_skipped(aws: Aws, case: str) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    put_checkpoint(aws, run_id)
    before = aws.checkpoint(run_id)
    event = task_stopped_event(
        aws, uuid.uuid4().hex, None if case == "not-longrun" else run_id, 3,
        exit_code=0 if case == "exit-0" else 1,
    )  # fmt: skip
    if case == "running":
        event["detail"]["lastStatus"] = "RUNNING"

    summary = safety_net.handler(event, None)

    assert actions(summary) == ["skipped"]
    assert aws.checkpoint(run_id) == before and aws.tasks() == []


def test_a_map_child_that_died_before_joining_is_joined_by_the_safety_net(
    aws: Aws, tmp_path: Path
) -> None:
    """A ``run.map`` child completed, but every attempt of its invocation failed to join
    its parent (here: the join write fails, and Lambda does not retry): its start event
    reaches the safety net, which finds the child settled and joins it; a second delivery
    of the same record counts nothing twice."""
    from longrun import FileStore
    from longrun.errors import StoreError
    from longrun.fanout import child_run_id, join_name, make_child_event, map_digest
    from longrun.testing import RecordingTransport

    root = tmp_path / "efs"
    aws.monkeypatch.setenv("LONGRUN_CHECKPOINT_URI", root.as_uri())

    class FailingJoin(FileStore):
        def replace_object(self, name: str, data: bytes, token: Any) -> bool:
            raise StoreError(f"injected: the write of {name} failed")

    store = FailingJoin(root)

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "i" in event:
            return event["i"]
        return sum(run.map("m", [{"i": i} for i in range(3)], max_concurrency=1))

    outcome = LambdaSim(store="handler").run(handler, {"id": "p-1"}, retries=0)
    assert outcome.status == "waiting"
    [dead] = outcome.dead_letters
    digest = map_digest("p-1", "m")
    assert store.load(child_run_id("p-1", digest, 0)).checkpoint.status.value == "completed"
    join = json.loads(FileStore(root).read_object(join_name("p-1", digest)) or b"{}")
    assert (join["ok"], join["started"]) == (0, 1)

    record = sqs_record(destination_record(dead.event, dead.request_id))
    sent = RecordingTransport()
    with ports.installed(transport=sent):
        summary = safety_net.handler({"Records": [record]}, None)
    [result] = summary["results"]
    assert result["action"] == "joined" and result["run_id"] == child_run_id("p-1", digest, 0)
    join = json.loads(FileStore(root).read_object(join_name("p-1", digest)) or b"{}")
    assert (join["ok"], join["started"], join["base"], join["launch"]) == (1, 2, 1, {})
    assert sent.sent == [make_child_event("p-1", digest, 1)]  # the next child is started
    with ports.installed(transport=sent):
        assert actions(safety_net.handler({"Records": [record]}, None)) == ["joined"]
    assert len(sent.sent) == 1
    join = json.loads(FileStore(root).read_object(join_name("p-1", digest)) or b"{}")
    assert (join["ok"], join["started"]) == (1, 2)  # not counted twice
    assert aws.tasks() == []  # nothing was started in Fargate
