"""Escalation to Fargate, end to end: real boto3 against moto (ECS, EC2, S3), the runner as a
real subprocess.

Lambda hops run in this process with a real-time context and hand off through the
:class:`~longrun.testing.invoke_endpoint.InvokeEndpoint`; an escalation calls ``ecs.run_task``
on moto; :class:`~longrun.testing.ecs_launcher.EcsLauncher` reads the task back from moto's ECS
API and runs its container command (``longrun-runner``) as a local process with the task's
environment. Every test asserts on what the real components hold at the end: the S3
checkpoint, moto's tasks, the runner's exit status and summary line, and a journal file the
handler appends one line per item to (so "exactly once" is counted across processes).

moto gaps worked around here (moto 5.2.5):

* ``run_task`` with ``awsvpc`` networking and no ``securityGroups`` is a 500 (KeyError in
  moto's ENI creation; real ECS uses the VPC's default group): every Fargate target here
  passes a security group.
* the ENI moto creates for an awsvpc task needs the VPC's ``enableDnsHostnames`` (else a 500,
  AttributeError ``private_dns_name``): the test VPC turns it on.
* a container definition without ``memory`` is a 500 (TypeError) even with task-level
  memory: the test task definitions set it on the container too.
* moto never answers ``failures`` (no capacity model): a Spot capacity failure is injected
  with a botocore ``before-call.ecs.RunTask`` hook; every other call reaches moto.
* moto advances ``lastStatus`` on every ``describe_tasks`` (RUNNING, DEACTIVATING, ...,
  STOPPED) whatever the task does: tests (and the launcher) go by ``desiredStatus``.
* moto does not check the 8192-character overrides limit (longrun checks it itself).
"""

from __future__ import annotations

import importlib.util
import io
import json
import queue
import tempfile
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ClientError

from longrun import EscalationFailed
from longrun import config as longrun_config
from longrun.config import FargateSettings, resolve_fargate
from longrun.handoff import fargate as fargate_module
from longrun.handoff.fargate import (
    MAX_OVERRIDES_CHARS,
    Fargate,
    container_overrides,
    start_event_task,
)
from longrun.testing.ecs_launcher import EcsLauncher, TaskProcess, base_environment
from longrun.testing.invoke_endpoint import InvokeEndpoint, InvokeRequest

FUNCTION = "etl-job"
ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"
CONTAINER = "worker"
LAMBDA_TIMEOUT_S = 1.0
RUNNER_TIMEOUT_S = 30.0
SPOT_CAPACITY_REASON = (
    "Capacity is unavailable at this time. Please try again later or in a different "
    "availability zone"
)

# The job every test runs. It journals one line per item (and one per entry into user code)
# to a file, flushed, so what each process did can be counted after the fact. With a
# jobconf.json next to it, it takes its store, its Fargate target and its clients from there
# (explicit arguments to @longrun); without one, from LONGRUN_* variables and boto3's
# AWS_ENDPOINT_URL (the way a deployed function is configured).
JOB_SOURCE = '''
"""A test job: count items, journal each one."""
import json
import os
import time
from pathlib import Path

import boto3
from botocore.config import Config

from longrun import Fargate, S3Store, current_run, longrun

GREETING = os.environ.get("JOB_GREETING")  # read at import, as configuration usually is
_CONF_PATH = Path(__file__).with_name("jobconf.json")
CONF = json.loads(_CONF_PATH.read_text()) if _CONF_PATH.exists() else None
JOURNAL = CONF["journal"] if CONF else os.environ["JOB_JOURNAL"]



def journal(line):
    with open(JOURNAL, "a") as out:
        out.write(line + "\\n")
        out.flush()


if os.environ.get("JOB_IMPORT_S"):  # a slow import (heavy dependencies, say)
    journal("import")
    time.sleep(float(os.environ["JOB_IMPORT_S"]))

options = {}
if CONF:
    _session = boto3.session.Session(region_name="us-east-1")
    s3 = _session.client("s3", endpoint_url=CONF["moto"])
    ecs = _session.client("ecs", endpoint_url=CONF["moto"])
    lambda_client = _session.client(
        "lambda", endpoint_url=CONF["lambda_url"], config=Config(retries={"max_attempts": 1})
    )
    options = dict(
        checkpoint=S3Store(CONF["bucket"], prefix="runs/", client=s3),
        escalate=Fargate(**CONF["fargate"], client=ecs),
        lambda_client=lambda_client,
        **CONF["longrun"],
    )


@longrun(**options)
def handler(event, context):
    run = current_run()
    journal(f"enter {run.hop} {context.aws_request_id}")
    time.sleep(event.get("setup_s", 0))
    for item in run.iterate(range(event["count"])):
        time.sleep(event["item_s"])
        if item == event.get("fail_at"):
            raise ValueError(f"item {item} is broken")
        journal(f"item {item} {run.hop}")
        run.state["done"] = run.state.get("done", 0) + 1
    return {
        "done": run.state.get("done", 0),
        "greeting": GREETING,
        "blob": len(event.get("blob", "")),
    }
'''

# An undecorated handler, for the runner's one-event mode (the safety net's path).
PLAIN_SOURCE = """
import os

GREETING = os.environ.get("JOB_GREETING")


def handler(event, context):
    with open(os.environ["JOB_JOURNAL"], "a") as out:
        out.write(f"plain {context.aws_request_id}\\n")
    return {
        "echo": event,
        "greeting": GREETING,
        "long_time_left": context.get_remaining_time_in_millis() > 3_600_000,
    }
"""


class RealTimeContext:
    """The Lambda context fields longrun reads, on the real monotonic clock."""

    def __init__(self, timeout_s: float, *, request_id: str | None = None) -> None:
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.invoked_function_arn = ARN
        self.function_name = FUNCTION
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = "1024"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# -- fixtures -------------------------------------------------------------------------------


def _client(service: str, endpoint: str) -> Any:
    import boto3

    session: Any = boto3.session.Session()
    return session.client(service, endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture(scope="module")
def network(moto_server: str) -> dict[str, str]:
    """A VPC (DNS hostnames on: moto needs it for a task's ENI), a subnet, a security group."""
    ec2 = _client("ec2", moto_server)
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(
        GroupName=f"longrun-{uuid.uuid4().hex[:8]}", Description="longrun tasks", VpcId=vpc
    )["GroupId"]
    return {"vpc": vpc, "subnet": subnet, "security_group": group}


@pytest.fixture
def ecs_client(moto_server: str) -> Any:
    return _client("ecs", moto_server)


@pytest.fixture
def cluster(ecs_client: Any) -> str:
    name = f"jobs-{uuid.uuid4().hex[:10]}"
    ecs_client.create_cluster(clusterName=name)
    return name


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "journal.txt"


@pytest.fixture
def delivered() -> queue.Queue[InvokeRequest]:
    return queue.Queue()


@pytest.fixture
def endpoint(delivered: queue.Queue[InvokeRequest]) -> Iterator[InvokeEndpoint]:
    with InvokeEndpoint(on_event=delivered.put, functions={FUNCTION}) as ep:
        yield ep


@pytest.fixture
def launcher(
    ecs_client: Any, cluster: str, moto_server: str, tmp_path: Path
) -> Iterator[EcsLauncher]:
    """Runs the cluster's tasks with the image's code on PYTHONPATH (image mode)."""
    env = base_environment(moto_server, pythonpath=[tmp_path / "image"])
    with EcsLauncher(ecs_client, cluster, base_env=env, cwd=tmp_path) as launcher:
        yield launcher


def register_task_definition(
    ecs_client: Any, environment: Mapping[str, str], *, family: str | None = None
) -> str:
    """A Fargate task definition whose container runs the runner (``longrun-runner``)."""
    response = ecs_client.register_task_definition(
        family=family or f"worker-{uuid.uuid4().hex[:10]}",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[
            {
                "name": CONTAINER,
                "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/etl-job:latest",
                "memory": 512,  # moto needs it on the container (see the module docstring)
                "essential": True,
                "command": ["longrun-runner"],
                "environment": [{"name": k, "value": v} for k, v in environment.items()],
            }
        ],
    )
    return str(response["taskDefinition"]["taskDefinitionArn"])


def write_image(tmp_path: Path, conf: Mapping[str, Any] | None) -> Path:
    """The "image": jobmod.py (and its jobconf.json for explicit configuration)."""
    image = tmp_path / "image"
    image.mkdir(exist_ok=True)
    (image / "jobmod.py").write_text(JOB_SOURCE)
    if conf is not None:
        (image / "jobconf.json").write_text(json.dumps(conf))
    return image


def load_module(path: Path) -> ModuleType:
    """Import ``path`` in this process under a fresh name (each test gets its own module)."""
    spec = importlib.util.spec_from_file_location(f"jobmod_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def explicit_job(
    tmp_path: Path,
    *,
    moto_server: str,
    endpoint: InvokeEndpoint,
    bucket: str,
    journal: Path,
    cluster: str,
    task_definition: str,
    network: Mapping[str, str],
    longrun_options: Mapping[str, Any],
    **fargate: Any,
) -> ModuleType:
    """The job with @longrun(checkpoint=S3Store(...), escalate=Fargate(...), ...) explicit."""
    target = {
        "cluster": cluster,
        "task_definition": task_definition,
        "container": CONTAINER,
        "subnets": [network["subnet"]],
        "security_groups": [network["security_group"]],
    }
    target.update(fargate)
    conf = {
        "moto": moto_server,
        "lambda_url": endpoint.url,
        "bucket": bucket,
        "journal": str(journal),
        "fargate": target,
        "longrun": dict(longrun_options),
    }
    return load_module(write_image(tmp_path, conf) / "jobmod.py")


JobFactory = Callable[..., ModuleType]


@pytest.fixture
def make_job(
    tmp_path: Path,
    moto_server: str,
    endpoint: InvokeEndpoint,
    bucket: str,
    ecs_client: Any,
    cluster: str,
    network: dict[str, str],
    journal: Path,
) -> JobFactory:
    """Makes :func:`explicit_job` on this test's fixtures: with ``task_definition`` (default: a
    new one that runs ``jobmod.handler``), ``subnet`` instead of the test network's, and
    ``fargate`` as more ``Fargate(...)`` arguments."""

    def make(
        longrun_options: Mapping[str, Any],
        *,
        task_definition: str | None = None,
        subnet: str | None = None,
        **fargate: Any,
    ) -> ModuleType:
        return explicit_job(
            tmp_path,
            moto_server=moto_server,
            endpoint=endpoint,
            bucket=bucket,
            journal=journal,
            cluster=cluster,
            task_definition=task_definition or register_task_definition(ecs_client, HANDLER),
            network={**network, "subnet": subnet or network["subnet"]},
            longrun_options=longrun_options,
            **fargate,
        )

    return make


EnvJobSettings = Callable[[str], dict[str, str]]


@pytest.fixture
def env_job_settings(
    bucket: str, journal: Path, cluster: str, network: dict[str, str]
) -> EnvJobSettings:
    """The LONGRUN_* configuration of the environment-configured job, for a task definition."""

    def settings(task_definition: str) -> dict[str, str]:
        return {
            "LONGRUN_CHECKPOINT_URI": f"s3://{bucket}/runs/",
            "LONGRUN_FARGATE_CLUSTER": cluster,
            "LONGRUN_FARGATE_TASK_DEFINITION": task_definition,
            "LONGRUN_FARGATE_CONTAINER": CONTAINER,
            "LONGRUN_FARGATE_SUBNETS": network["subnet"],
            "LONGRUN_FARGATE_SECURITY_GROUPS": network["security_group"],
            "JOB_JOURNAL": str(journal),
        }

    return settings


def use_env(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """Configure this process like a deployed function; longrun's client and store caches
    are swapped for fresh ones so nothing created here outlives the test."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(fargate_module, "_clients", {})
    monkeypatch.setattr(longrun_config, "_store_cache", {})


# -- helpers --------------------------------------------------------------------------------


def checkpoint(s3_client: Any, bucket: str, run_id: str) -> dict[str, Any]:
    body = s3_client.get_object(Bucket=bucket, Key=f"runs/{run_id}/checkpoint.json")["Body"]
    return json.loads(body.read())  # type: ignore[no-any-return]


class Journal:
    """What the handler wrote: ``enter HOP REQUEST_ID`` and ``item N HOP`` lines."""

    def __init__(self, path: Path) -> None:
        lines = path.read_text().splitlines() if path.exists() else []
        self.items = [int(line.split()[1]) for line in lines if line.startswith("item ")]
        self.item_hops = [int(line.split()[2]) for line in lines if line.startswith("item ")]
        self.enters = [
            (int(line.split()[1]), line.split()[2]) for line in lines if line.startswith("enter ")
        ]
        self.imports = sum(1 for line in lines if line == "import")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def drive_lambda(
    handler: Callable[[Any, Any], Any],
    event: Any,
    delivered: queue.Queue[InvokeRequest],
    *,
    request_id: str,
) -> list[Any]:
    """Run hop 0, then every hop handed off through the endpoint, until one does not
    continue in Lambda; returns every response."""
    responses = [handler(event, RealTimeContext(LAMBDA_TIMEOUT_S, request_id=request_id))]
    while (responses[-1].get("longrun") or {}).get("next") == "lambda":
        request = delivered.get(timeout=5)
        assert request.function == ARN and request.invocation_type == "Event"
        responses.append(handler(request.json(), RealTimeContext(LAMBDA_TIMEOUT_S)))
        assert len(responses) < 20, "too many Lambda hops"
    return responses


def finish(process: TaskProcess, timeout: float = RUNNER_TIMEOUT_S) -> dict[str, Any]:
    """Wait for the runner; exit 0 and a summary line are expected."""
    code = process.wait(timeout=timeout)
    assert code == 0, process.output()
    summary = process.summary()
    assert summary is not None, process.output()
    return summary


def hops(doc: Mapping[str, Any]) -> list[tuple[int, str, str]]:
    return [(h["hop"], h["where"], h["outcome"]) for h in doc["hops"]]


def assert_completed_in_one_task(
    s3_client: Any, bucket: str, run_id: str, journal: Path, count: int
) -> None:
    """Hop 0 escalated from Lambda and the one task (hop 1) completed the run with ``count``
    items, each done exactly once, in order."""
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "completed" and doc["result"]["done"] == count
    assert hops(doc) == [(0, "lambda", "escalated"), (1, "fargate", "completed")]
    assert Journal(journal).items == list(range(count))


def capture_run_task(client: Any, *, fail: Callable[[dict[str, Any]], str | None]) -> list[Any]:
    """Record every RunTask request ``client`` sends; answer with a failure of reason
    ``fail(request)`` when it returns one (the call then never reaches moto)."""
    requests: list[dict[str, Any]] = []

    def before_call(params: dict[str, Any], **_: Any) -> Any:
        request = json.loads(params["body"])
        requests.append(request)
        reason = fail(request)
        if reason is None:
            return None  # on to moto
        http = AWSResponse(params["url"], 200, HTTPHeaders(), None)
        failure = {"arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/x"}
        return http, {"tasks": [], "failures": [{**failure, "reason": reason}]}

    client.meta.events.register("before-call.ecs.RunTask", before_call)
    return requests


def run_task(
    ecs_client: Any,
    cluster: str,
    task_definition: str,
    network: Mapping[str, str],
    environment: Mapping[str, str],
) -> str:
    """RunTask by hand, with ``environment`` as the container override."""
    response = ecs_client.run_task(
        cluster=cluster,
        taskDefinition=task_definition,
        launchType="FARGATE",
        startedBy="longrun",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [network["subnet"]],
                "securityGroups": [network["security_group"]],
            }
        },
        overrides={
            "containerOverrides": [
                {
                    "name": CONTAINER,
                    "environment": [{"name": k, "value": v} for k, v in environment.items()],
                }
            ]
        },
    )
    return str(response["tasks"][0]["taskArn"])


RUN = {"LONGRUN_RUN_ID": "r-1", "LONGRUN_HOP": "1"}
HANDLER = {"LONGRUN_HANDLER": "jobmod.handler"}


# -- 1. the hop budget ----------------------------------------------------------------------


def test_escalation_after_hop_budget_then_runner_completes_the_run(
    make_job: JobFactory,
    delivered: queue.Queue[InvokeRequest],
    s3_client: Any,
    bucket: str,
    ecs_client: Any,
    network: dict[str, str],
    launcher: EcsLauncher,
    journal: Path,
) -> None:
    task_definition = register_task_definition(ecs_client, HANDLER)
    job = make_job({"max_hops": 1, "min_margin_ms": 300}, task_definition=task_definition)
    run_id = f"budget-{uuid.uuid4().hex[:8]}"
    count = 40

    responses = drive_lambda(
        job.handler, {"count": count, "item_s": 0.05}, delivered, request_id=run_id
    )

    # Two Lambda hops (max_hops=1 is one re-invocation), the second one escalates.
    assert [r["longrun"]["next"] for r in responses] == ["lambda", "fargate"]
    last = responses[-1]["longrun"]
    assert (last["status"], last["hop"]) == ("continued", 1)
    task_arn = last["task_arn"]
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "escalated" and doc["next"] == "fargate"
    assert doc["escalation"]["hop"] == 2
    assert doc["escalation"]["task_arn"] == task_arn
    assert doc["escalation"]["reason"] == "hop budget used up"
    assert hops(doc) == [(0, "lambda", "continued"), (1, "lambda", "escalated")]
    in_lambda = Journal(journal).items
    assert 0 < len(in_lambda) < count
    assert doc["state"] == {"done": len(in_lambda)}

    # What moto holds: one task, as longrun asked for it.
    [spec] = launcher.pending()
    assert spec.task_arn == task_arn
    assert spec.override_environment == {"LONGRUN_RUN_ID": run_id, "LONGRUN_HOP": "2"}
    assert spec.container == CONTAINER and spec.command == ("longrun-runner",)
    assert spec.started_by == "longrun"
    assert spec.tags == {"longrun:run-id": run_id, "longrun:hop": "2"}
    assert spec.launch_type == "FARGATE" and spec.capacity_provider is None
    assert spec.task["taskDefinitionArn"] == task_definition
    [attachment] = spec.task["attachments"]
    details = {d["name"]: d["value"] for d in attachment["details"]}
    assert details["subnetId"] == network["subnet"]

    # The runner resumes the run where Lambda left it.
    process = launcher.launch(spec)
    summary = finish(process)
    assert summary["longrun_runner"] == "done"
    assert summary["result"] == {"done": count, "greeting": None, "blob": 0}
    assert summary["stopping"] is False

    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "completed"
    assert doc["result"] == {"done": count, "greeting": None, "blob": 0}
    assert hops(doc) == [
        (0, "lambda", "continued"),
        (1, "lambda", "escalated"),
        (2, "fargate", "completed"),
    ]
    assert doc["hops"][2]["request_id"] == f"fargate-{spec.ecs_task_id}"
    assert doc["claim"] is None
    assert sum(h["items"] for h in doc["hops"]) == count
    record = Journal(journal)
    assert record.items == list(range(count))  # each exactly once, in order
    assert [hop for hop, _ in record.enters] == [0, 1, 2]
    assert launcher.task_arns() == []  # the task is stopped, and no other was started

    # The same task delivered again (a stale duplicate): no user code, exit 0.
    again = launcher.launch(spec)
    summary = finish(again)
    assert summary["longrun"]["status"] == "duplicate"
    assert len(Journal(journal).enters) == 3
    assert checkpoint(s3_client, bucket, run_id)["status"] == "completed"


# -- 2. a hop without progress --------------------------------------------------------------


def test_hop_without_progress_escalates_at_once_and_runner_finishes(
    make_job: JobFactory,
    endpoint: InvokeEndpoint,
    delivered: queue.Queue[InvokeRequest],
    s3_client: Any,
    bucket: str,
    launcher: EcsLauncher,
    journal: Path,
) -> None:
    # A margin larger than the Lambda timeout: no item can ever start in Lambda.
    job = make_job({"margin_ms": 5000, "max_hops": 10})
    run_id = f"noprog-{uuid.uuid4().hex[:8]}"

    started = time.monotonic()
    [response] = drive_lambda(
        job.handler, {"count": 5, "item_s": 0.02}, delivered, request_id=run_id
    )
    assert time.monotonic() - started < LAMBDA_TIMEOUT_S

    assert response["longrun"]["next"] == "fargate"
    assert delivered.empty() and endpoint.calls == []  # no Lambda re-invocation at all
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "escalated"
    assert doc["escalation"]["reason"] == "no progress in a Lambda hop"
    assert doc["escalation"]["hop"] == 1
    assert doc["hops"][0]["items"] == 0
    assert Journal(journal).items == []

    [spec] = launcher.pending()
    assert spec.task_arn == response["longrun"]["task_arn"] == doc["escalation"]["task_arn"]
    assert spec.override_environment == {"LONGRUN_RUN_ID": run_id, "LONGRUN_HOP": "1"}
    summary = finish(launcher.launch(spec))
    assert summary["result"]["done"] == 5

    assert_completed_in_one_task(s3_client, bucket, run_id, journal, 5)


# -- 3. the 8192-character overrides limit --------------------------------------------------


def test_large_event_escalates_with_small_overrides(
    make_job: JobFactory,
    delivered: queue.Queue[InvokeRequest],
    s3_client: Any,
    bucket: str,
    launcher: EcsLauncher,
) -> None:
    job = make_job({"margin_ms": 5000})
    run_id = f"big-{uuid.uuid4().hex[:8]}"
    event = {"count": 3, "item_s": 0.01, "blob": "x" * 100_000}

    [response] = drive_lambda(job.handler, event, delivered, request_id=run_id)

    assert response["longrun"]["next"] == "fargate"
    [spec] = launcher.pending()
    # moto does not enforce the limit; the overrides ECS would check are far below it.
    assert len(json.dumps(spec.task["overrides"])) < MAX_OVERRIDES_CHARS
    assert len(json.dumps(spec.overrides)) < 1000
    assert checkpoint(s3_client, bucket, run_id)["event"] == event  # the event travels here

    summary = finish(launcher.launch(spec))
    assert summary["result"] == {"done": 3, "greeting": None, "blob": 100_000}
    assert checkpoint(s3_client, bucket, run_id)["status"] == "completed"


def test_overrides_over_the_limit_fail_before_run_task(
    make_job: JobFactory,
    s3_client: Any,
    bucket: str,
    ecs_client: Any,
    cluster: str,
    network: dict[str, str],
    launcher: EcsLauncher,
) -> None:
    long_handler = "pkg." + "m" * 9000 + ".handler"
    settings = resolve_fargate(
        Fargate(
            cluster=cluster,
            task_definition="worker",
            container=CONTAINER,
            subnets=[network["subnet"]],
            handler=long_handler,
        )
    )
    assert isinstance(settings, FargateSettings)
    with pytest.raises(EscalationFailed, match=f"limit of {MAX_OVERRIDES_CHARS}") as info:
        container_overrides(settings, "run-1", 1)
    assert "LONGRUN_HANDLER" in str(info.value)
    # The same handler path is fine when short.
    short = resolve_fargate(
        Fargate(
            cluster=cluster,
            task_definition="w",
            container="c",
            subnets=["s"],
            handler="jobmod.handler",
        )
    )
    assert short is not None
    assert len(json.dumps(container_overrides(short, "run-1", 1))) < MAX_OVERRIDES_CHARS

    # Through a decorated handler: the escalation fails, nothing reaches ECS, the run keeps
    # its checkpoint as failed.
    job = make_job(
        {"margin_ms": 5000},
        task_definition=register_task_definition(ecs_client, {}),
        handler=long_handler,
    )
    requests = capture_run_task(job.ecs, fail=lambda request: None)
    run_id = f"toolong-{uuid.uuid4().hex[:8]}"
    with pytest.raises(EscalationFailed, match=str(MAX_OVERRIDES_CHARS)):
        job.handler({"count": 1, "item_s": 0}, RealTimeContext(LAMBDA_TIMEOUT_S, request_id=run_id))
    assert requests == []
    assert launcher.task_arns(desired_status=None) == []
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "EscalationFailed"


# -- 4. Fargate Spot ------------------------------------------------------------------------


SpotJob = Callable[..., ModuleType]


@pytest.fixture
def spot_job(make_job: JobFactory) -> SpotJob:
    """Makes the job with ``Fargate(spot=True)`` (escalating at once unless told otherwise)."""

    def make(
        longrun_options: Mapping[str, Any] | None = None, subnet: str | None = None
    ) -> ModuleType:
        return make_job(longrun_options or {"margin_ms": 5000}, subnet=subnet, spot=True)

    return make


def test_spot_asks_for_fargate_spot(
    spot_job: SpotJob,
    delivered: queue.Queue[InvokeRequest],
    launcher: EcsLauncher,
    s3_client: Any,
    bucket: str,
) -> None:
    job = spot_job()
    requests = capture_run_task(job.ecs, fail=lambda request: None)
    run_id = f"spot-{uuid.uuid4().hex[:8]}"

    [response] = drive_lambda(job.handler, {"count": 1, "item_s": 0}, delivered, request_id=run_id)

    [request] = requests
    assert request["capacityProviderStrategy"] == [
        {"capacityProvider": "FARGATE_SPOT", "weight": 1}
    ]
    assert "launchType" not in request
    [spec] = launcher.pending()
    assert spec.task_arn == response["longrun"]["task_arn"]
    assert spec.capacity_provider == "FARGATE_SPOT"  # moto records the provider
    assert spec.launch_type is None
    assert checkpoint(s3_client, bucket, run_id)["escalation"]["task_arn"] == spec.task_arn


def test_spot_capacity_failure_falls_back_to_on_demand(
    spot_job: SpotJob,
    delivered: queue.Queue[InvokeRequest],
    launcher: EcsLauncher,
    s3_client: Any,
    bucket: str,
) -> None:
    job = spot_job()
    requests = capture_run_task(
        job.ecs,
        fail=lambda request: (
            SPOT_CAPACITY_REASON if "capacityProviderStrategy" in request else None
        ),
    )
    run_id = f"fallback-{uuid.uuid4().hex[:8]}"

    [response] = drive_lambda(job.handler, {"count": 1, "item_s": 0}, delivered, request_id=run_id)

    assert [("capacityProviderStrategy" in r, r.get("launchType")) for r in requests] == [
        (True, None),
        (False, "FARGATE"),
    ]
    assert requests[0]["overrides"] == requests[1]["overrides"]
    [spec] = launcher.pending()  # only the on-demand attempt reached moto
    assert spec.launch_type == "FARGATE" and spec.capacity_provider is None
    assert spec.task_arn == response["longrun"]["task_arn"]
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "escalated" and doc["escalation"]["task_arn"] == spec.task_arn


def test_spot_non_capacity_failure_fails_the_escalation_and_keeps_progress(
    spot_job: SpotJob,
    launcher: EcsLauncher,
    s3_client: Any,
    bucket: str,
    journal: Path,
) -> None:
    # max_hops=0: the first hop does real work, then must escalate (budget).
    job = spot_job({"max_hops": 0, "min_margin_ms": 300})
    requests = capture_run_task(job.ecs, fail=lambda request: "MISSING")
    run_id = f"missing-{uuid.uuid4().hex[:8]}"

    with pytest.raises(EscalationFailed, match="MISSING"):
        job.handler(
            {"count": 100, "item_s": 0.05}, RealTimeContext(LAMBDA_TIMEOUT_S, request_id=run_id)
        )

    assert len(requests) == 1  # no on-demand retry for a reason other than capacity
    assert launcher.task_arns(desired_status=None) == []
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "EscalationFailed"
    assert "MISSING" in doc["error"]["message"]
    done = Journal(journal).items
    assert len(done) > 0
    assert doc["state"] == {"done": len(done)}
    assert doc["cursors"]["#0"]["pos"] == len(done)


def test_invalid_subnet_fails_the_escalation_with_the_ecs_error(
    spot_job: SpotJob,
    launcher: EcsLauncher,
    s3_client: Any,
    bucket: str,
) -> None:
    job = spot_job(subnet="subnet-0000000000000dead")
    run_id = f"badnet-{uuid.uuid4().hex[:8]}"

    with pytest.raises(EscalationFailed, match=r"InvalidSubnetID\.NotFound"):
        job.handler({"count": 1, "item_s": 0}, RealTimeContext(LAMBDA_TIMEOUT_S, request_id=run_id))

    assert launcher.task_arns(desired_status=None) == []
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "failed" and doc["error"]["type"] == "EscalationFailed"
    assert "subnet-0000000000000dead" in doc["error"]["message"]


# -- 5. SIGTERM -----------------------------------------------------------------------------


EnvJobRun = Callable[..., tuple[str, str]]


@pytest.fixture
def env_job_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_server: str,
    env_job_settings: EnvJobSettings,
    ecs_client: Any,
    delivered: queue.Queue[InvokeRequest],
) -> EnvJobRun:
    """Runs an environment-configured job whose first (Lambda) hop escalates; returns
    (run_id, task definition ARN)."""

    def run(
        *,
        event: Mapping[str, Any],
        settings: Mapping[str, str],
        runner_env: Mapping[str, str],
    ) -> tuple[str, str]:
        family = f"worker-{uuid.uuid4().hex[:10]}"  # named by family: its latest revision
        env = env_job_settings(family)
        env.update(settings)
        # The task definition carries the same configuration as the function (plus the runner's).
        task_definition = register_task_definition(
            ecs_client, {**env, "LONGRUN_HANDLER": "jobmod.handler", **runner_env}, family=family
        )
        use_env(monkeypatch, {**env, "AWS_ENDPOINT_URL": moto_server})
        job = load_module(write_image(tmp_path, None) / "jobmod.py")
        run_id = f"env-{uuid.uuid4().hex[:8]}"
        [response] = drive_lambda(job.handler, dict(event), delivered, request_id=run_id)
        assert response["longrun"]["next"] == "fargate", response
        return run_id, task_definition

    return run


def test_sigterm_checkpoints_and_starts_a_replacement_task(
    env_job_run: EnvJobRun,
    s3_client: Any,
    bucket: str,
    launcher: EcsLauncher,
    journal: Path,
) -> None:
    count = 16
    run_id, task_definition = env_job_run(
        event={"count": count, "item_s": 0.2},
        settings={"LONGRUN_MAX_HOPS": "0", "LONGRUN_MIN_MARGIN_MS": "300"},
        runner_env={"LONGRUN_FARGATE_STOP_S": "2"},
    )
    in_lambda = len(Journal(journal).items)
    # On a loaded machine the 1 s Lambda hop may spend its time on the claim write and start
    # no item (it then escalates for lack of progress): what matters here is the task.
    assert 0 <= in_lambda < count
    [first] = launcher.pending()
    assert first.override_environment == {"LONGRUN_RUN_ID": run_id, "LONGRUN_HOP": "1"}

    process = launcher.launch(first)
    wait_until(lambda: len(Journal(journal).items) >= in_lambda + 2, 15, "items in the task")
    process.terminate()
    stopped_at = time.monotonic()
    summary = finish(process, timeout=30)
    # Well inside ECS's stopTimeout (30 s by default): LONGRUN_FARGATE_STOP_S (2 s) plus the
    # checkpoint and RunTask, with room for a loaded CI machine.
    assert time.monotonic() - stopped_at < 20

    assert summary["stopping"] is True
    status = summary["longrun"]
    assert (status["status"], status["next"], status["hop"]) == ("continued", "fargate", 1)
    replacement_arn = status["task_arn"]
    assert replacement_arn != first.task_arn

    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "escalated"
    assert doc["escalation"]["hop"] == 2
    assert doc["escalation"]["task_arn"] == replacement_arn
    assert hops(doc) == [(0, "lambda", "escalated"), (1, "fargate", "escalated")]
    assert doc["hops"][1]["request_id"] == f"fargate-{first.ecs_task_id}"
    done = len(Journal(journal).items)
    assert in_lambda + 2 <= done < count
    assert doc["state"] == {"done": done}

    # moto: the stopped task is STOPPED, the replacement is waiting for hop 2.
    [replacement] = launcher.pending()
    assert replacement.task_arn == replacement_arn
    assert replacement.override_environment == {"LONGRUN_RUN_ID": run_id, "LONGRUN_HOP": "2"}
    assert replacement.tags == {"longrun:run-id": run_id, "longrun:hop": "2"}
    # Started by the runner from its LONGRUN_FARGATE_* variables (the family's revision).
    assert replacement.task_definition_arn == first.task_definition_arn == task_definition
    assert launcher.task_arns() == [replacement_arn]

    summary = finish(launcher.launch(replacement))
    assert summary["result"]["done"] == count and summary["stopping"] is False
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "completed" and doc["result"]["done"] == count
    assert hops(doc)[-1] == (2, "fargate", "completed")
    assert doc["hops"][2]["request_id"] == f"fargate-{replacement.ecs_task_id}"
    record = Journal(journal)
    assert record.items == list(range(count))  # exactly once across three processes
    assert set(record.item_hops) == ({0, 1, 2} if in_lambda else {1, 2})


def test_sigterm_before_any_item_still_hands_over(
    env_job_run: EnvJobRun,
    s3_client: Any,
    bucket: str,
    launcher: EcsLauncher,
    journal: Path,
) -> None:
    """A Spot interruption while the task is still setting up (no item done yet) must hand
    the run to a replacement, not fail it as "no progress"."""
    run_id, _ = env_job_run(
        event={"count": 3, "item_s": 0.05, "setup_s": 1.0},
        settings={"LONGRUN_MARGIN_MS": "5000"},  # no item fits in Lambda
        runner_env={"LONGRUN_FARGATE_STOP_S": "0.5"},
    )
    [first] = launcher.pending()
    process = launcher.launch(first)
    wait_until(lambda: len(Journal(journal).enters) == 2, 15, "the task entering user code")
    process.terminate()
    summary = finish(process, timeout=10)

    assert summary["stopping"] is True
    assert summary["longrun"]["next"] == "fargate"
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "escalated" and doc["error"] is None
    assert doc["escalation"]["hop"] == 2
    [replacement] = launcher.pending()
    assert replacement.task_arn == doc["escalation"]["task_arn"]
    assert replacement.override_environment["LONGRUN_HOP"] == "2"
    assert Journal(journal).items == []


# -- 6. function mode -----------------------------------------------------------------------


def _zip(files: Mapping[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_endpoint_get_function_serves_configuration_and_code(endpoint: InvokeEndpoint) -> None:
    package = _zip({"app.py": "def handler(event, context):\n    return 1\n"})
    endpoint.add_function(
        "code-fn", handler="app.handler", zip_bytes=package, environment={"K": "V"}
    )
    client = endpoint.client()

    response = client.get_function(FunctionName="code-fn")
    configuration = response["Configuration"]
    assert configuration["FunctionName"] == "code-fn"
    assert configuration["FunctionArn"] == endpoint.arn("code-fn")
    assert configuration["Handler"] == "app.handler"
    assert configuration["Runtime"].startswith("python3")
    assert configuration["Environment"] == {"Variables": {"K": "V"}}
    assert response["Code"]["RepositoryType"] == "S3"
    with urllib.request.urlopen(response["Code"]["Location"], timeout=5) as reply:
        assert reply.read() == package
    assert endpoint.code_downloads == ["code-fn"]

    qualified = client.get_function(FunctionName=endpoint.arn("code-fn", "7"))["Configuration"]
    assert (qualified["FunctionArn"], qualified["Version"]) == (endpoint.arn("code-fn", "7"), "7")
    with pytest.raises(ClientError) as info:
        client.get_function(FunctionName="other-fn")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert endpoint.get_function_calls == ["code-fn", "code-fn", "other-fn"]
    # A function registered with code is a known function for Invoke too.
    client.invoke(FunctionName="code-fn", InvocationType="Event", Payload=b"{}")
    assert [c.request.function_name for c in endpoint.calls] == ["code-fn"]


def test_function_mode_downloads_code_and_merges_its_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_server: str,
    endpoint: InvokeEndpoint,
    delivered: queue.Queue[InvokeRequest],
    s3_client: Any,
    bucket: str,
    ecs_client: Any,
    cluster: str,
    env_job_settings: EnvJobSettings,
    journal: Path,
) -> None:
    # The task definition of a function-mode image: it only names the function.
    task_definition = register_task_definition(ecs_client, {"LONGRUN_FUNCTION_NAME": FUNCTION})
    function_env = env_job_settings(task_definition)
    run_id = f"fn-{uuid.uuid4().hex[:8]}"
    endpoint.add_function(
        FUNCTION,
        handler="jobmod.handler",
        zip_bytes=_zip({"jobmod.py": JOB_SOURCE}),
        environment={
            **function_env,
            "JOB_GREETING": "hello from the function configuration",
            "LONGRUN_RUN_ID": "not-this-one",  # what the task is for is never taken from here
        },
    )

    # Hop 0 runs "in Lambda" (this process) with the same configuration and escalates.
    use_env(
        monkeypatch, {**function_env, "AWS_ENDPOINT_URL": moto_server, "LONGRUN_MARGIN_MS": "5000"}
    )
    job = load_module(write_image(tmp_path, None) / "jobmod.py")
    [response] = drive_lambda(
        job.handler, {"count": 4, "item_s": 0.01}, delivered, request_id=run_id
    )
    assert response["longrun"]["next"] == "fargate"

    # The container has no code of its own (nothing on PYTHONPATH, an empty cwd).
    empty = tmp_path / "container"
    empty.mkdir()
    base = base_environment(moto_server, extra={"AWS_ENDPOINT_URL_LAMBDA": endpoint.url})
    with EcsLauncher(ecs_client, cluster, base_env=base, cwd=empty) as launcher:
        [spec] = launcher.pending()
        assert spec.environment == {
            "LONGRUN_FUNCTION_NAME": FUNCTION,
            "LONGRUN_RUN_ID": run_id,
            "LONGRUN_HOP": "1",
        }
        summary = finish(launcher.launch(spec))

    assert summary["result"] == {
        "done": 4,
        "greeting": "hello from the function configuration",
        "blob": 0,
    }
    assert endpoint.get_function_calls == [FUNCTION]
    assert endpoint.code_downloads == [FUNCTION]
    assert_completed_in_one_task(s3_client, bucket, run_id, journal, 4)


def test_function_mode_runs_one_stored_event_through_a_plain_handler(
    tmp_path: Path,
    moto_server: str,
    endpoint: InvokeEndpoint,
    ecs_client: Any,
    cluster: str,
    network: dict[str, str],
    journal: Path,
) -> None:
    task_definition = register_task_definition(ecs_client, {})
    endpoint.add_function(
        "plain-fn",
        handler="plainmod.handler",
        zip_bytes=_zip({"plainmod.py": PLAIN_SOURCE}),
        environment={"JOB_GREETING": "plain hello", "JOB_JOURNAL": str(journal)},
    )
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps({"order": 7}))
    settings = resolve_fargate(
        Fargate(
            cluster=cluster,
            task_definition=task_definition,
            container=CONTAINER,
            subnets=[network["subnet"]],
            security_groups=[network["security_group"]],
            client=ecs_client,
        )
    )
    assert settings is not None
    task_arn = start_event_task(
        settings, function_name="plain-fn", event_uri=event_file.as_uri(), tag="req-123"
    )

    base = base_environment(moto_server, extra={"AWS_ENDPOINT_URL_LAMBDA": endpoint.url})
    with EcsLauncher(ecs_client, cluster, base_env=base, cwd=tmp_path) as launcher:
        [spec] = launcher.pending()
        assert spec.task_arn == task_arn
        assert spec.override_environment == {
            "LONGRUN_FUNCTION_NAME": "plain-fn",
            "LONGRUN_EVENT_URI": event_file.as_uri(),
        }
        assert spec.tags == {"longrun:request-id": "req-123"}
        summary = finish(launcher.launch(spec))

    assert summary["result"] == {
        "echo": {"order": 7},
        "greeting": "plain hello",
        "long_time_left": True,
    }
    assert journal.read_text().splitlines() == [f"plain fargate-{spec.ecs_task_id}"]


def test_function_mode_refuses_a_zip_with_an_unsafe_path(
    tmp_path: Path,
    moto_server: str,
    endpoint: InvokeEndpoint,
    ecs_client: Any,
    cluster: str,
    network: dict[str, str],
) -> None:
    escaped = f"longrun-slip-{uuid.uuid4().hex[:8]}.py"
    endpoint.add_function(
        "evil-fn",
        handler="jobmod.handler",
        zip_bytes=_zip({"jobmod.py": "def handler(e, c): pass\n", f"../{escaped}": "x = 1\n"}),
    )
    task_definition = register_task_definition(ecs_client, {"LONGRUN_FUNCTION_NAME": "evil-fn"})
    task_arn = run_task(ecs_client, cluster, task_definition, network, RUN)
    base = base_environment(moto_server, extra={"AWS_ENDPOINT_URL_LAMBDA": endpoint.url})
    with EcsLauncher(ecs_client, cluster, base_env=base, cwd=tmp_path) as launcher:
        process = launcher.launch(task_arn)
        assert process.wait(timeout=RUNNER_TIMEOUT_S) == 2, process.output()
    summary = process.summary()
    assert summary is not None and summary["longrun_runner"] == "config_error"
    assert "unsafe path" in summary["error"] and escaped in summary["error"]
    assert endpoint.code_downloads == ["evil-fn"]
    assert not (Path(tempfile.gettempdir()) / escaped).exists()


# -- 7. runner configuration, failures and duplicates ----------------------------------------


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (RUN, "LONGRUN_HANDLER=module.function"),
        ({**RUN, "LONGRUN_HANDLER": "nodots"}, "not of the form module.function"),
        ({**RUN, "LONGRUN_HANDLER": "missingmod.handler"}, "cannot import 'missingmod'"),
        ({**HANDLER, "LONGRUN_RUN_ID": "r-1", "LONGRUN_HOP": "two"}, "LONGRUN_HOP='two'"),
        ({**HANDLER, "LONGRUN_RUN_ID": "../x", "LONGRUN_HOP": "1"}, "LONGRUN_RUN_ID"),
        (HANDLER, "LONGRUN_EVENT_URI"),
        ({**HANDLER, **RUN, "LONGRUN_FARGATE_STOP_S": "soon"}, "LONGRUN_FARGATE_STOP_S"),
    ],
    ids=[
        "no-handler",
        "bad-handler",
        "missing-module",
        "bad-hop",
        "bad-run-id",
        "no-run",
        "bad-stop-s",
    ],
)
def test_runner_configuration_errors_exit_2(
    environment: dict[str, str],
    message: str,
    tmp_path: Path,
    ecs_client: Any,
    cluster: str,
    network: dict[str, str],
    launcher: EcsLauncher,
    journal: Path,
) -> None:
    write_image(tmp_path, None)  # importable, but must not run
    # What the job module needs to import (it is configured from the environment).
    task_definition = register_task_definition(
        ecs_client,
        {"JOB_JOURNAL": str(journal), "LONGRUN_CHECKPOINT_URI": "s3://no-such-bucket/runs/"},
    )
    task_arn = run_task(ecs_client, cluster, task_definition, network, environment)

    process = launcher.launch(task_arn)
    assert process.wait(timeout=RUNNER_TIMEOUT_S) == 2, process.output()
    summary = process.summary()
    assert summary is not None and summary["longrun_runner"] == "config_error"
    assert message in summary["error"]
    assert process.records()[-1] == summary  # the summary is the last JSON line
    assert not journal.exists()
    assert launcher.task_arns() == []  # marked stopped


def test_runner_exits_1_and_records_the_failure_when_the_handler_raises(
    make_job: JobFactory,
    delivered: queue.Queue[InvokeRequest],
    s3_client: Any,
    bucket: str,
    launcher: EcsLauncher,
    journal: Path,
) -> None:
    job = make_job({"margin_ms": 5000})
    run_id = f"fail-{uuid.uuid4().hex[:8]}"
    event = {"count": 5, "item_s": 0.01, "fail_at": 3}
    drive_lambda(job.handler, event, delivered, request_id=run_id)

    [spec] = launcher.pending()
    process = launcher.launch(spec)
    assert process.wait(timeout=RUNNER_TIMEOUT_S) == 1, process.output()
    summary = process.summary()
    assert summary == {"longrun_runner": "failed", "error": "ValueError: item 3 is broken"}
    assert process.records()[-1] == summary
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "ValueError" and doc["error"]["terminal"] is False
    assert hops(doc)[-1] == (1, "fargate", "failed")
    assert Journal(journal).items == [0, 1, 2]
    assert launcher.task_arns() == []  # no replacement for a failure


@pytest.mark.parametrize("case", ["import-raises", "unknown-function"])
def test_runner_prints_a_summary_when_the_code_cannot_be_loaded(
    case: str,
    tmp_path: Path,
    endpoint: InvokeEndpoint,
    moto_server: str,
    ecs_client: Any,
    cluster: str,
    network: dict[str, str],
    journal: Path,
) -> None:
    image = tmp_path / "image"
    image.mkdir()
    (image / "brokenmod.py").write_text('raise RuntimeError("broken at import")\n')
    task_definition = register_task_definition(ecs_client, {})
    if case == "import-raises":
        target, expected = {"LONGRUN_HANDLER": "brokenmod.handler"}, "broken at import"
    else:
        target, expected = {"LONGRUN_FUNCTION_NAME": "no-such-function"}, "no-such-function"
    task_arn = run_task(ecs_client, cluster, task_definition, network, {**target, **RUN})
    base = base_environment(
        moto_server, pythonpath=[image], extra={"AWS_ENDPOINT_URL_LAMBDA": endpoint.url}
    )
    with EcsLauncher(ecs_client, cluster, base_env=base, cwd=tmp_path) as launcher:
        process = launcher.launch(task_arn)
        code = process.wait(timeout=RUNNER_TIMEOUT_S)
    summary = process.summary()
    assert code in (1, 2), process.output()
    assert summary is not None, process.output()
    assert summary["longrun_runner"] in ("failed", "config_error")
    assert expected in summary["error"]


def test_sigterm_during_start_up_does_not_strand_the_run(
    make_job: JobFactory,
    delivered: queue.Queue[InvokeRequest],
    s3_client: Any,
    bucket: str,
    launcher: EcsLauncher,
    journal: Path,
) -> None:
    job = make_job({"margin_ms": 5000})
    run_id = f"early-{uuid.uuid4().hex[:8]}"
    drive_lambda(job.handler, {"count": 3, "item_s": 0.01}, delivered, request_id=run_id)
    [first] = launcher.pending()

    process = launcher.launch(first, env={"JOB_IMPORT_S": "1.5", "LONGRUN_FARGATE_STOP_S": "1"})
    wait_until(lambda: Journal(journal).imports == 1, 15, "the task importing the handler")
    process.terminate()
    code = process.wait(timeout=15)

    doc = checkpoint(s3_client, bucket, run_id)
    # Either way the run must not point at the stopped task with no one to carry it on.
    assert code == 0, process.output()
    assert doc["status"] == "escalated"
    assert doc["escalation"]["task_arn"] != first.task_arn
    assert launcher.task_arns() == [doc["escalation"]["task_arn"]]


def test_duplicate_task_for_a_live_run_runs_no_user_code(
    make_job: JobFactory,
    delivered: queue.Queue[InvokeRequest],
    s3_client: Any,
    bucket: str,
    ecs_client: Any,
    cluster: str,
    network: dict[str, str],
    launcher: EcsLauncher,
    journal: Path,
) -> None:
    """A second task for the same hop, arriving after the first task's initial lease would
    have run out: the heartbeat has renewed the lease, so it is refused."""
    task_definition = register_task_definition(ecs_client, HANDLER)
    job = make_job({"margin_ms": 5000}, task_definition=task_definition)
    run_id = f"dup-{uuid.uuid4().hex[:8]}"
    count = 25
    lease = {"LONGRUN_FARGATE_LEASE_S": "1.5"}  # heartbeat every max(1, 1.5 / 3) = 1 s
    drive_lambda(job.handler, {"count": count, "item_s": 0.2}, delivered, request_id=run_id)
    [first] = launcher.pending()
    owner = launcher.launch(first, env=lease)
    wait_until(lambda: len(Journal(journal).items) >= 1, 15, "the first task's first item")
    claim = checkpoint(s3_client, bucket, run_id)["claim"]
    assert claim["request_id"] == f"fargate-{first.ecs_task_id}"
    assert claim["where"] == "fargate"
    initial_deadline = claim["deadline_ms"]
    wait_until(lambda: time.time() * 1000 > initial_deadline + 300, 10, "the initial lease to pass")
    renewed = checkpoint(s3_client, bucket, run_id)["claim"]
    assert renewed["request_id"] == claim["request_id"]
    assert renewed["deadline_ms"] > time.time() * 1000  # renewed by the heartbeat

    # A second task for the same hop (as a second RunTask for it would start).
    second_arn = run_task(ecs_client, cluster, task_definition, network, first.override_environment)
    [second] = launcher.pending()
    assert second.task_arn == second_arn
    duplicate = launcher.launch(second, env=lease)
    summary = finish(duplicate, timeout=15)
    assert owner.returncode is None, "the duplicate must not outlast the owner"
    assert summary["longrun"]["status"] == "duplicate"
    assert summary["longrun"]["hop"] == 1
    assert claim["request_id"] in summary["longrun"]["reason"]

    summary = finish(owner)
    assert summary["result"]["done"] == count
    record = Journal(journal)
    assert record.items == list(range(count))
    enters = [request for hop, request in record.enters if hop == 1]
    assert enters == [f"fargate-{first.ecs_task_id}"]  # the duplicate ran no user code
    doc = checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "completed"
    assert [h["request_id"] for h in doc["hops"] if h["where"] == "fargate"] == [
        f"fargate-{first.ecs_task_id}"
    ]
    assert launcher.task_arns() == []
