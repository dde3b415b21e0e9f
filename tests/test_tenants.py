"""Per-tenant isolation mode: every continuation of a run is invoked with the run's tenant
(``X-Amz-Tenant-Id``), through boto3 against a real Invoke endpoint, and the simulator and
the Fargate runner carry the tenant as Lambda does."""

from __future__ import annotations

import json
import queue
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from realtime import RealTimeContext as _RealTimeContext

from longrun import Fargate, MemoryStore, current_run, longrun
from longrun.testing import LambdaSim
from longrun.testing.invoke_endpoint import InvokeEndpoint, InvokeRequest

FUNCTION = "tenant-job"
ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"


def RealTimeContext(timeout_s: float, tenant_id: Any = None) -> Any:
    return _RealTimeContext(timeout_s, arn=ARN, tenant_id=tenant_id)


@pytest.fixture
def delivered() -> queue.Queue[InvokeRequest]:
    return queue.Queue()


@pytest.fixture
def lambda_client(delivered: queue.Queue[InvokeRequest]) -> Iterator[Any]:
    with InvokeEndpoint(on_event=delivered.put, functions={FUNCTION}) as endpoint:
        yield endpoint.client(config=Config(retries={"max_attempts": 1}))


def test_every_handoff_carries_the_tenant_header(
    delivered: queue.Queue[InvokeRequest], lambda_client: Any
) -> None:
    store = MemoryStore()
    seen: list[str | None] = []

    @longrun(checkpoint=store, lambda_client=lambda_client, min_margin_ms=100)
    def handler(event: Any, context: Any) -> int:
        seen.append(context.tenant_id)
        run = current_run()
        for i in run.iterate(range(12)):
            if i and i % 3 == 0 and run.hop == i // 3 - 1:
                run.end_hop()  # three items a hop: three hand-offs
            time.sleep(0.05)
            run.state["n"] = i + 1
        return int(run.state["n"])

    def context(tenant: str | None) -> Any:
        return RealTimeContext(60, tenant)

    result = handler({"job": 1}, context("tenant-a"))
    headers = []
    while isinstance(result, dict):
        request = delivered.get(timeout=10)
        assert request.function == ARN
        headers.append(request.headers.get("X-Amz-Tenant-Id"))
        # Lambda invokes the function with the tenant of the request.
        result = handler(request.json(), context(request.headers.get("X-Amz-Tenant-Id")))
    assert result == 12
    assert headers == ["tenant-a"] * 3
    assert seen == ["tenant-a"] * 4
    [run_id] = list(store.list_runs())
    assert store.status(run_id)["tenant_id"] == "tenant-a"


def test_a_function_without_tenants_sends_no_tenant_header(
    delivered: queue.Queue[InvokeRequest], lambda_client: Any
) -> None:
    @longrun(checkpoint=MemoryStore(), lambda_client=lambda_client)
    def handler(event: Any, context: Any) -> None:
        current_run().state["started"] = True
        current_run().end_hop()

    handler({}, RealTimeContext(60))
    request = delivered.get(timeout=10)
    assert "X-Amz-Tenant-Id" not in request.headers


def test_a_tenant_id_that_is_not_a_string_is_a_clear_error() -> None:
    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        pass

    ctx = RealTimeContext(60, tenant_id=42)
    with pytest.raises(Exception, match=r"context\.tenant_id is a int \(42\), not a string"):
        handler({}, ctx)


def test_the_simulator_and_fargate_hops_see_the_tenant() -> None:
    seen: Counter[tuple[str, str | None]] = Counter()

    @longrun(
        checkpoint=MemoryStore(),
        max_hops=1,
        escalate=Fargate(cluster="c", task_definition="t", container="w", subnets=["s"]),
    )
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        seen[(run.where, context.tenant_id)] += 1
        for _ in run.iterate(range(10)):
            time.sleep(1)
        return 10

    outcome = LambdaSim().run(handler, {}, timeout_s=4, tenant_id="tenant-b")

    assert outcome.status == "completed"
    assert set(seen) == {("lambda", "tenant-b"), ("fargate", "tenant-b")}
    assert outcome.document is not None and outcome.document["tenant_id"] == "tenant-b"


def test_the_runner_reads_the_tenant_from_its_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    from longrun.handoff.fargate import container_overrides
    from longrun.runner import ContainerContext, resolve_runner

    monkeypatch.setenv("LONGRUN_TENANT_ID", "tenant-c")
    assert ContainerContext(resolve_runner()).tenant_id == "tenant-c"
    monkeypatch.delenv("LONGRUN_TENANT_ID")
    assert ContainerContext(resolve_runner()).tenant_id is None
    from longrun.config import resolve_fargate

    fargate = Fargate(cluster="c", task_definition="t", container="w", subnets=["s"])
    target = resolve_fargate(fargate)
    assert target is not None
    overrides = container_overrides(target, "run-1", 3, {"LONGRUN_TENANT_ID": "tenant-c"})
    env = overrides["containerOverrides"][0]["environment"]
    assert {"name": "LONGRUN_TENANT_ID", "value": "tenant-c"} in env
    assert json.dumps(overrides)


def test_the_tenant_reaches_every_hop_process_in_the_emulator(
    longrun_local: Any, tmp_path: Any
) -> None:
    """Real processes: the Invoke API takes X-Amz-Tenant-Id, the Runtime API hands it to
    awslambdaric (Lambda-Runtime-Aws-Tenant-Id), longrun sends it with every hand-off."""
    from pathlib import Path

    app = Path(__file__).parent / "pitfall_app" / "app.py"
    journal = tmp_path / "journal.txt"
    journal.touch()
    function = longrun_local.deploy(
        f"{app}:handler",
        name="tenant-app",
        env={"PITFALL_JOURNAL": str(journal), "LONGRUN_MIN_MARGIN_MS": "600"},
        timeout_s=1.5,
        escalate=False,
    )
    run_id = longrun_local.invoke(function, {"mode": "tenant"}, tenant_id="tenant-e")
    run = longrun_local.wait(timeout=120).run(run_id)
    assert run.status == "completed" and run.lambda_hops > 1
    items = [line.split()[2] for line in journal.read_text().splitlines()]
    assert sorted(items, key=lambda x: int(x.split(":")[0])) == [f"{i}:tenant-e" for i in range(30)]
    assert function.store.status(run_id)["tenant_id"] == "tenant-e"
