"""The deployment kit (examples/deploy): cfn-lint is clean, and the template says what the docs
promise: least privilege, the Fargate worker runs ``longrun-runner`` from the function's image,
recursion is allowed, failed hops reach the safety net.

Nothing here talks to AWS. cfn-lint runs as a real process; the other checks read the template
with cfn-lint's own YAML decoder (it understands ``!Ref``, ``!Sub``, ``!GetAtt``...).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from longrun import config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples" / "deploy"
TEMPLATE = DEPLOY / "template.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

LAMBDA_BASE_IMAGE = "public.ecr.aws/lambda/python:3.12"
LIBRARY_ENV = {value for name, value in vars(config).items() if name.startswith("ENV_")}
RUNNER_ONLY_ENV = {
    config.ENV_RUN_ID,
    config.ENV_HOP,
    config.ENV_FUNCTION_NAME,
    config.ENV_EVENT_URI,
}


def _cfnlint_available() -> None:
    try:
        import cfnlint  # noqa: F401
    except ImportError:  # pragma: no cover - a dev install has it
        pytest.fail("cfn-lint is not installed: pip install -e '.[dev]'")


@cache
def template() -> dict[str, Any]:
    _cfnlint_available()
    from cfnlint.decode import cfn_yaml

    return dict(cfn_yaml.load(str(TEMPLATE)))


def resources(kind: str | None = None) -> dict[str, dict[str, Any]]:
    found = template()["Resources"]
    return {name: r for name, r in found.items() if kind is None or r["Type"] == kind}


def props(name: str) -> dict[str, Any]:
    return dict(template()["Resources"][name]["Properties"])


def function_env(name: str) -> dict[str, Any]:
    """A SAM function's environment: Globals merged with its own (its own wins)."""
    merged = dict(template()["Globals"]["Function"]["Environment"]["Variables"])
    merged.update(props(name).get("Environment", {}).get("Variables", {}))
    return merged


def container(name: str = "worker") -> dict[str, Any]:
    (found,) = [c for c in props("TaskDefinition")["ContainerDefinitions"] if c["Name"] == name]
    return dict(found)


def container_env() -> dict[str, Any]:
    return {item["Name"]: item["Value"] for item in container()["Environment"]}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def statements() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement of the template with the resource (policy or role) holding it."""
    for name, resource in resources().items():
        p = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in p.get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    yield name, statement
        elif resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            for statement in p["PolicyDocument"]["Statement"]:
                yield name, statement


def role_statements(role: str) -> list[dict[str, Any]]:
    """The statements in force for ``role``: its inline policies and the attached ones."""
    found = [s for holder, s in statements() if holder == role]
    for _, resource in resources().items():
        attached = resource["Properties"].get("Roles", []) if "Properties" in resource else []
        if resource["Type"].startswith("AWS::IAM::") and {"Ref": role} in attached:
            found.extend(resource["Properties"]["PolicyDocument"]["Statement"])
    return found


def role_actions(role: str) -> set[str]:
    return {
        a for s in role_statements(role) if s["Effect"] == "Allow" for a in as_list(s["Action"])
    }


def allowing(role: str, action: str) -> list[dict[str, Any]]:
    return [
        s
        for s in role_statements(role)
        if s["Effect"] == "Allow" and action in as_list(s["Action"])
    ]


def sub(value: Any) -> str:
    """The string of a ``!Sub "..."`` (fails on anything else)."""
    assert isinstance(value, dict) and set(value) == {"Fn::Sub"}, value
    assert isinstance(value["Fn::Sub"], str)
    return str(value["Fn::Sub"])


# ------------------------------------------------------------------------- cfn-lint


def test_cfn_lint_reports_nothing() -> None:
    """cfn-lint, informational checks included, has no finding at all on the template."""
    _cfnlint_available()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cfnlint.runner import main; sys.exit(main())",
            "--include-checks",
            "I",
            "--format",
            "parseable",
            "--",
            str(TEMPLATE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    assert "ignore_checks" not in TEMPLATE.read_text()  # no finding silenced in Metadata


# ------------------------------------------------------------------------- the functions


def test_the_example_function_is_an_image_function_with_recursion_allowed() -> None:
    assert template()["Transform"] == "AWS::Serverless-2016-10-31"
    etl = props("EtlFunction")
    assert resources()["EtlFunction"]["Type"] == "AWS::Serverless::Function"
    assert etl["PackageType"] == "Image"
    assert etl["Timeout"] == 900
    assert etl["RecursiveLoop"] == "Allow"
    assert etl["FunctionName"] == {"Ref": "FunctionName"}  # explicit: its ARN is known up front


def test_the_function_environment_configures_the_store_and_fargate() -> None:
    env = function_env("EtlFunction")
    assert sub(env["LONGRUN_CHECKPOINT_URI"]) == "s3://${DataBucket}/longrun/"
    assert env["LONGRUN_MAX_HOPS"] == {"Ref": "MaxHops"}
    assert env["LONGRUN_FARGATE_CLUSTER"] == {"Ref": "Cluster"}
    assert (
        sub(env["LONGRUN_FARGATE_TASK_DEFINITION"]) == props("TaskDefinition")["Family"]["Fn::Sub"]
    )
    assert env["LONGRUN_FARGATE_CONTAINER"] == container()["Name"] == "worker"
    assert env["LONGRUN_FARGATE_SUBNETS"] == {"Fn::Join": [",", {"Ref": "SubnetIds"}]}
    assert template()["Parameters"]["SubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert env["LONGRUN_FARGATE_SECURITY_GROUPS"] == {
        "Fn::GetAtt": ["TaskSecurityGroup", "GroupId"]
    }
    assert env["LONGRUN_FARGATE_SPOT"] == "true"
    assert env["LONGRUN_FARGATE_ASSIGN_PUBLIC_IP"] == {"Ref": "AssignPublicIp"}


def test_every_longrun_variable_is_one_the_library_reads() -> None:
    used = set(function_env("EtlFunction")) | set(function_env("SafetyNetFunction"))
    used |= set(container_env())
    longrun_vars = {name for name in used if name.startswith("LONGRUN_")}
    assert longrun_vars <= LIBRARY_ENV, longrun_vars - LIBRARY_ENV
    # Set per task by the library in the RunTask overrides, never in the template.
    assert not longrun_vars & RUNNER_ONLY_ENV


# ------------------------------------------------------------------------- Fargate


def test_the_worker_runs_longrun_runner_from_the_same_image() -> None:
    worker = container()
    assert worker["Command"] == ["longrun-runner"]
    # The Lambda image's /lambda-entrypoint.sh must not run; an empty list may mean "unset".
    assert worker["EntryPoint"] and "lambda-entrypoint" not in " ".join(worker["EntryPoint"])
    image = worker["Image"]
    assert props("EtlFunction")["ImageUri"] == image
    assert props("SafetyNetFunction")["ImageUri"] == image
    task = props("TaskDefinition")
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["NetworkMode"] == "awsvpc"
    assert task["Cpu"] == {"Ref": "TaskCpu"} and task["Memory"] == {"Ref": "TaskMemory"}
    assert task["TaskRoleArn"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}
    assert task["ExecutionRoleArn"] == {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]}
    assert worker["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "TaskLogGroup"}


def test_the_worker_environment_supports_image_mode_and_replacement_tasks() -> None:
    env = container_env()
    function = function_env("EtlFunction")
    assert env["LONGRUN_HANDLER"] == "app.handler"
    for name in (
        "LONGRUN_CHECKPOINT_URI",
        "LONGRUN_FARGATE_CLUSTER",
        "LONGRUN_FARGATE_TASK_DEFINITION",
        "LONGRUN_FARGATE_CONTAINER",
        "LONGRUN_FARGATE_SUBNETS",
        "LONGRUN_FARGATE_SECURITY_GROUPS",
        "LONGRUN_FARGATE_ASSIGN_PUBLIC_IP",
        "LONGRUN_FARGATE_SPOT",
    ):
        assert env[name] == function[name], name


def test_the_cluster_offers_fargate_and_fargate_spot() -> None:
    assert set(props("Cluster")["CapacityProviders"]) == {"FARGATE", "FARGATE_SPOT"}


def test_the_task_security_group_is_egress_only() -> None:
    group = props("TaskSecurityGroup")
    assert "SecurityGroupIngress" not in group
    assert group["SecurityGroupEgress"]
    assert not resources("AWS::EC2::SecurityGroupIngress")


# ------------------------------------------------------------------------- least privilege


def test_nothing_is_granted_on_every_resource_but_the_ecr_login() -> None:
    for holder, statement in statements():
        actions = as_list(statement["Action"])
        assert not any(a == "*" or a.endswith(":*") for a in actions), (holder, actions)
        if statement["Effect"] == "Allow" and "*" in as_list(statement.get("Resource")):
            # GetAuthorizationToken has no resource type: IAM takes only "*" for it.
            assert actions == ["ecr:GetAuthorizationToken"], (holder, statement)
            assert holder == "TaskExecutionRole"
    for holder, statement in statements():
        for action in as_list(statement["Action"]):
            if action.split(":")[0] in ("lambda", "ecs", "iam", "s3", "sqs", "logs"):
                for resource in as_list(statement["Resource"]):
                    assert resource != "*", (holder, action)


def test_the_function_may_invoke_only_itself() -> None:
    (statement,) = allowing("EtlFunctionRole", "lambda:InvokeFunction")
    prefix = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
    arns = sorted(sub(r) for r in as_list(statement["Resource"]))
    assert arns == [prefix + "${FunctionName}", prefix + "${FunctionName}:*"]
    for role in ("TaskRole", "SafetyNetRole", "TaskExecutionRole"):
        assert not allowing(role, "lambda:InvokeFunction"), role


def test_run_task_is_limited_to_the_worker_family_on_its_cluster() -> None:
    family = sub(props("TaskDefinition")["Family"])
    for role in ("EtlFunctionRole", "TaskRole", "SafetyNetRole"):
        (statement,) = allowing(role, "ecs:RunTask")
        assert sub(statement["Resource"]).endswith(f":task-definition/{family}:*")
        assert statement["Condition"] == {
            "ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}
        }
        (tagging,) = allowing(role, "ecs:TagResource")
        assert tagging["Condition"] == {"StringEquals": {"ecs:CreateAction": "RunTask"}}
        assert sub(tagging["Resource"]).endswith(":task/${Cluster}/*")
    assert not allowing("TaskExecutionRole", "ecs:RunTask")


def test_pass_role_covers_only_the_worker_roles_and_only_to_ecs_tasks() -> None:
    worker_roles = [
        {"Fn::GetAtt": ["TaskRole", "Arn"]},
        {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]},
    ]
    for role in ("EtlFunctionRole", "TaskRole", "SafetyNetRole"):
        (statement,) = allowing(role, "iam:PassRole")
        assert as_list(statement["Resource"]) == worker_roles
        assert statement["Condition"] == {
            "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
        }


def test_s3_access_is_limited_to_the_bucket_prefixes() -> None:
    allowed_object_prefixes = {
        "longrun/",
        "longrun/safety-net/",  # the safety net's stored events (longrun.safety_net)
        "longrun/_runs/",  # the run index's markers (longrun.stores.index)
        "${InputPrefix}",
        "${OutputPrefix}",
    }
    for holder, statement in statements():
        actions = as_list(statement["Action"])
        if not any(a.startswith("s3:") for a in actions) or statement["Effect"] != "Allow":
            continue
        for resource in as_list(statement["Resource"]):
            if resource == {"Fn::GetAtt": ["DataBucket", "Arn"]}:
                assert actions == ["s3:ListBucket"], (holder, statement)
                prefix = statement["Condition"]["StringLike"]["s3:prefix"]
                prefix = prefix if isinstance(prefix, str) else sub(prefix)
                assert prefix.removesuffix("*") in allowed_object_prefixes, (holder, prefix)
            else:
                text = sub(resource)
                assert text.startswith("${DataBucket.Arn}/") and text.endswith("*"), text
                inner = text.removeprefix("${DataBucket.Arn}/").removesuffix("*")
                assert inner in allowed_object_prefixes, (holder, text)
                assert "s3:ListBucket" not in actions
    # Deleting never reaches a checkpoint: the run index replaces its own markers, and the
    # safety net removes its own start markers.
    deleting = [(h, s) for h, s in statements() if "s3:DeleteObject" in as_list(s["Action"])]
    assert sorted((h, sub(s["Resource"])) for h, s in deleting) == [
        ("CheckpointAccessPolicy", "${DataBucket.Arn}/longrun/_runs/*"),
        ("SafetyNetRole", "${DataBucket.Arn}/longrun/safety-net/*"),
    ]


def test_each_role_has_what_its_code_needs() -> None:
    checkpoint = {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    escalate = {"ecs:RunTask", "ecs:TagResource", "iam:PassRole"}
    function = role_actions("EtlFunctionRole")
    assert checkpoint | escalate | {"lambda:InvokeFunction", "sqs:SendMessage"} <= function
    task = role_actions("TaskRole")
    assert checkpoint | escalate | {"lambda:GetFunction"} <= task
    (get_function,) = allowing("TaskRole", "lambda:GetFunction")
    assert all(":function:${FunctionName}" in sub(r) for r in as_list(get_function["Resource"]))
    safety = role_actions("SafetyNetRole")
    assert checkpoint | escalate | {"sqs:ReceiveMessage", "sqs:DeleteMessage"} <= safety
    assert not any(
        a.startswith(("lambda:", "ecs:", "iam:")) for a in role_actions("TaskExecutionRole")
    )
    for role in resources("AWS::IAM::Role"):
        assert "ManagedPolicyArns" not in props(role), role  # no broad AWS managed policies


# ------------------------------------------------------------------------- safety net


def test_failed_hops_go_to_the_queue_the_safety_net_consumes() -> None:
    invoke_config = props("EtlFunction")["EventInvokeConfig"]
    assert invoke_config["MaximumRetryAttempts"] == 2
    on_failure = invoke_config["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    queue = on_failure["Destination"]
    assert queue == {"Fn::GetAtt": ["FailureQueue", "Arn"]}
    (sender,) = allowing("EtlFunctionRole", "sqs:SendMessage")
    assert sender["Resource"] == queue

    safety = props("SafetyNetFunction")
    assert safety["PackageType"] == "Image"
    assert safety["ImageConfig"]["Command"] == ["longrun.safety_net.handler"]
    (event,) = safety["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == queue
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        (statement,) = allowing("SafetyNetRole", action)
        assert statement["Resource"] == queue
    # Only the function and the task-stopped rule may put a record in the queue (each one
    # can start a Fargate task).
    rule_arn = {"Fn::GetAtt": ["TaskStoppedRule", "Arn"]}
    (policy,) = resources("AWS::SQS::QueuePolicy").values()
    assert policy["Properties"]["Queues"] == [{"Ref": "FailureQueue"}]
    deny, allow = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "sqs:SendMessage"
    assert deny["Principal"] == "*"
    assert deny["Condition"] == {
        "ArnNotEquals": {
            "aws:PrincipalArn": {"Fn::GetAtt": ["EtlFunctionRole", "Arn"]},
            "aws:SourceArn": rule_arn,
        }
    }
    assert allow["Effect"] == "Allow" and allow["Action"] == "sqs:SendMessage"
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arn}}
    # The same LONGRUN_* settings as the function it watches.
    assert function_env("SafetyNetFunction") == function_env("EtlFunction")
    # Lambda wants a visibility timeout of at least the consumer's timeout.
    assert props("FailureQueue")["VisibilityTimeout"] >= 6 * safety["Timeout"]


def test_stopped_worker_tasks_reach_the_safety_net() -> None:
    """A task that dies without SIGTERM is noticed: ECS's STOPPED events for this cluster's
    longrun tasks go to the queue the safety net consumes."""
    rule = props("TaskStoppedRule")
    assert rule["EventPattern"] == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {
            "clusterArn": [{"Fn::GetAtt": ["Cluster", "Arn"]}],
            "lastStatus": ["STOPPED"],
            "startedBy": ["longrun"],
        },
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["FailureQueue", "Arn"]}


# ------------------------------------------------------------------------- bucket, outputs


def test_the_bucket_is_private_encrypted_and_unversioned() -> None:
    bucket = props("DataBucket")
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert bucket.get("VersioningConfiguration", {}).get("Status", "Suspended") == "Suspended"


def test_the_outputs_name_what_an_operator_needs() -> None:
    assert {"FunctionName", "BucketName", "ClusterName", "FailureQueueUrl"} <= set(
        template()["Outputs"]
    )


# ------------------------------------------------------------------------- the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_dockerfile_builds_on_the_lambda_python_base_image() -> None:
    instructions = dockerfile_instructions()
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert froms == [LAMBDA_BASE_IMAGE]
    assert instructions[-1] == ("CMD", '["app.handler"]')
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert "pip install" in runs and "--target" not in runs  # longrun-runner must be on PATH
    # The worker's entry point and command must exist in the image: checked at build time.
    assert container()["EntryPoint"] == ["/usr/bin/env"]
    assert "test -x /usr/bin/env" in runs and "command -v longrun-runner" in runs


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for op, arg in dockerfile_instructions():
        if op != "COPY":
            continue
        sources = arg.split()[:-1]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source in included, source


def test_the_image_provides_the_commands_and_handlers_the_template_names() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["longrun-runner"].startswith("longrun.runner:")
    app = (ROOT / "examples" / "etl" / "app.py").read_text()
    assert re.search(r"^def handler\(", app, re.MULTILINE)  # LONGRUN_HANDLER=app.handler
