"""``@longrun`` stacked with Powertools' own decorators, in either order, and with the
idempotency utility on moto DynamoDB.

Each stacking runs a whole multi-hop run in the simulator and checks what a user would look
at: every item done once, the user's log lines with both Powertools' context keys and the
hop's, the user's metrics blob once per invocation, longrun's own blob once per hop, never
mixed with the user's.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent,
)
from moto import mock_aws

from longrun import MemoryStore, current_run, longrun, observe, ports
from longrun.testing import FakeContext, LambdaSim, RecordingTransport, VirtualClock

ITEMS = 12


def blobs(out: str) -> list[dict[str, Any]]:
    found = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            found.append(json.loads(line))
    return found


def namespace(blob: dict[str, Any]) -> str:
    return str(blob["_aws"]["CloudWatchMetrics"][0]["Namespace"])


@pytest.fixture
def powertools_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv(observe.ENV_METRICS, "on")


@pytest.mark.parametrize("order", ["powertools outside", "powertools inside"])
def test_stacked_with_logger_metrics_and_tracer(
    order: str, powertools_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = io.StringIO()
    # (a service name of its own: Powertools keeps one configured logger per service name)
    logger = Logger(service=f"stack-{order.split()[1]}", stream=stream)
    metrics = Metrics(namespace="UserJobs", service="stack")
    tracer = Tracer(service="stack")
    seen = [0] * ITEMS

    def body(event: dict[str, Any], context: Any) -> dict[str, Any]:
        metrics.add_metric(name="Invocations", unit=MetricUnit.Count, value=1)
        run = current_run()
        for i in run.iterate(range(event["n"])):
            time.sleep(1.0)  # virtual time in the simulator
            seen[i] += 1
            logger.info("did", extra={"i": i})
        return {"n": event["n"]}

    def powertools(fn: Callable[..., Any]) -> Callable[..., Any]:
        return tracer.capture_lambda_handler(metrics.log_metrics(logger.inject_lambda_context(fn)))

    decorate = longrun(checkpoint=MemoryStore(), min_margin_ms=1000, logger=logger)
    handler = (
        powertools(decorate(body)) if order == "powertools outside" else decorate(powertools(body))
    )

    outcome = LambdaSim().run(handler, {"n": ITEMS}, timeout_s=5.0)
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == {"n": ITEMS}
    assert seen == [1] * ITEMS
    hops = len(outcome.hops)
    assert hops >= 3

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    did = [line for line in lines if line["message"] == "did"]
    assert sorted(line["i"] for line in did) == list(range(ITEMS))
    for line in did:
        # Powertools' context keys (inject_lambda_context) and the hop's, together.
        assert line["function_name"] == "longrun-sim" and line["cold_start"] in (True, False)
        assert line["run_id"] == outcome.run_id and isinstance(line["hop"], int)
        assert line["function_request_id"]

    emitted = blobs(capsys.readouterr().out)
    mine = [b for b in emitted if namespace(b) == "UserJobs"]
    ours = [b for b in emitted if namespace(b) == "longrun"]
    assert len(mine) == hops  # the user's blob once per invocation that ran the handler
    assert len(ours) == hops  # longrun's once per hop
    assert all("Hops" not in b for b in mine) and all("Invocations" not in b for b in ours)


# -- the idempotency utility -------------------------------------------------------------------


@pytest.fixture
def idempotency_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("dynamodb").create_table(
            TableName="idempotency",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield "idempotency"


def test_a_run_outliving_its_idempotency_record_is_not_started_again(
    idempotency_table: str,
) -> None:
    """``@idempotent`` above ``@longrun``, keyed on the job id, and ``run_id`` from the same
    job id: once the idempotency record has expired, a redelivered start event reaches
    longrun, which answers with the existing run instead of starting it again."""
    store = MemoryStore()
    transport = RecordingTransport()
    clock = VirtualClock()
    done: list[int] = []
    config = IdempotencyConfig(event_key_jmespath="job_id", expires_after_seconds=1)
    layer = DynamoDBPersistenceLayer(table_name=idempotency_table)

    @idempotent(persistence_store=layer, config=config)
    @longrun(checkpoint=store, run_id=lambda event: event["job_id"])
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        run = current_run()
        for i in run.iterate(range(6)):
            if i == 3 and run.hop == 0:
                run.end_hop()
            done.append(i)
        return {"done": len(done)}

    start = {"job_id": "job-7"}
    with ports.installed(clock=clock, transport=transport):
        first = handler(start, FakeContext(clock, timeout_s=60))
        assert first["longrun"]["status"] == "continued" and len(transport.sent) == 1
        # Within the record's lifetime the utility answers a redelivery itself.
        assert handler(start, FakeContext(clock, timeout_s=60)) == first
        time.sleep(2.2)  # the record expires (whole seconds, on the real clock)
        again = handler(start, FakeContext(clock, timeout_s=60))["longrun"]
        assert again == {"run_id": "job-7", "status": "continued", "hop": 0, "existing": True}
        assert len(transport.sent) == 1  # no new hop was started
        # The continuation carries no job id: the utility lets it through, the run finishes.
        final = handler(transport.sent[0], FakeContext(clock, timeout_s=60))
    assert final == {"done": 6}
    assert done == list(range(6))  # every item once
    assert store.status("job-7")["status"] == "completed"


def test_idempotent_below_longrun_refuses_the_next_hop_as_the_docs_warn(
    idempotency_table: str,
) -> None:
    """The order docs/observability.md warns against: longrun ends hop 0 with a
    BaseException, the utility's record stays in progress, and hop 1 (which passes the utility
    the same original event) is refused. The run keeps its checkpoint."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
    )

    store = MemoryStore()
    transport = RecordingTransport()
    clock = VirtualClock()
    layer = DynamoDBPersistenceLayer(table_name=idempotency_table)

    @longrun(checkpoint=store, run_id=lambda event: event["job_id"])
    @idempotent(persistence_store=layer, config=IdempotencyConfig(event_key_jmespath="job_id"))
    def handler(event: dict[str, Any], context: Any) -> str:
        run = current_run()
        for i in run.iterate(range(6)):
            if i == 3 and run.hop == 0:
                run.end_hop()
        return "ok"

    with ports.installed(clock=clock, transport=transport):
        handler({"job_id": "job-8"}, FakeContext(clock, timeout_s=60))
        with pytest.raises(IdempotencyAlreadyInProgressError):
            handler(transport.sent[0], FakeContext(clock, timeout_s=60))
    assert store.status("job-8")["cursors"]["#0"]["pos"] == 3  # nothing lost
