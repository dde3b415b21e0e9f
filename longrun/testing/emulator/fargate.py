"""Fargate in moto: the ECS cluster and network the emulator's functions escalate to, a
FARGATE task definition per function, and every task started there run as a local
``longrun-runner`` process."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping
from typing import Any

from ...protocol import Answer, Status
from ..ecs_launcher import EcsLauncher, TaskProcess, TaskSpec, base_environment
from .checkpoints import CheckpointReader
from .core import Core
from .functions import LocalFunction, search_path
from .helpers import ACCOUNT, CONTAINER, LONGRUN_ROOT, REGION, int_or_none, now_ms
from .records import InvocationRecord


class FargateInMoto:
    """ECS and EC2 in the emulator's moto, set up on first need, and the tasks run there.

    :meth:`setup` creates a cluster, a VPC with a subnet and a security group, and starts a
    loop that runs each task started in the cluster (by a function or the safety net) with an
    :class:`~longrun.testing.ecs_launcher.EcsLauncher`, and records it when it exits.
    """

    def __init__(self, core: Core, checkpoints: CheckpointReader) -> None:
        self._core = core
        self._checkpoints = checkpoints
        self._ecs: dict[str, Any] | None = None
        self._launcher: EcsLauncher | None = None
        self._task_function: dict[str, str] = {}
        """Task definition ARN → the function it runs."""
        self._running_tasks = 0
        self._clean_poll_gen = -1
        """The last change (:attr:`Core.gen`) after which a look at ECS found no task to start."""

    @property
    def tasks(self) -> list[TaskProcess]:
        """Every Fargate task process started so far, in order."""
        return [] if self._launcher is None else list(self._launcher.processes)

    def idle(self) -> bool:
        """No task running, and none to start as of a look at ECS since the last change (or
        Fargate never set up). Call with the lock held."""
        if self._running_tasks != 0:
            return False
        return self._launcher is None or self._clean_poll_gen == self._core.gen

    def close(self) -> None:
        """Stop the task processes still running (the emulator is stopping)."""
        if self._launcher is not None:
            with contextlib.suppress(Exception):
                self._launcher.close()

    def setup(self) -> dict[str, Any]:
        """The cluster, subnet, security group and ECS client, created on first call (which
        also starts the loop that runs the tasks)."""
        with self._core.cond:
            if self._ecs is not None:
                return self._ecs
        ec2, ecs = self._core.moto.client("ec2"), self._core.moto.client("ecs")
        suffix = uuid.uuid4().hex[:8]
        # moto needs DNS hostnames on the VPC for an awsvpc task's ENI, and a security group.
        vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.99.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(
            GroupName=f"longrun-local-{suffix}", Description="longrun local tasks", VpcId=vpc
        )["GroupId"]
        cluster = f"longrun-local-{suffix}"
        ecs.create_cluster(clusterName=cluster)
        base = base_environment(
            self._core.moto.url,
            region=REGION,
            pythonpath=[LONGRUN_ROOT],
            extra={"AWS_ENDPOINT_URL_LAMBDA": self._core.endpoint.url},
        )
        launcher = EcsLauncher(ecs, cluster, base_env=base)
        setup = {"cluster": cluster, "subnet": subnet, "security_group": group, "client": ecs}
        with self._core.cond:
            if self._ecs is None:
                self._ecs, self._launcher = setup, launcher
                self._core.spawn(self._loop, "emulator-fargate")
            return self._ecs

    def environment(self) -> dict[str, str]:
        """``LONGRUN_FARGATE_*`` for a function that escalates here."""
        ecs = self.setup()
        return {
            "LONGRUN_FARGATE_CLUSTER": ecs["cluster"],
            "LONGRUN_FARGATE_CONTAINER": CONTAINER,
            "LONGRUN_FARGATE_SUBNETS": ecs["subnet"],
            "LONGRUN_FARGATE_SECURITY_GROUPS": ecs["security_group"],
            "LONGRUN_FARGATE_STOP_S": f"{self._core.fargate_stop_s:g}",
        }

    def register_task_definition(
        self, function: LocalFunction, configuration: Mapping[str, str]
    ) -> str:
        """Register ``function``'s FARGATE task definition, ``configuration`` (its
        ``LONGRUN_*`` and own variables) in its container's environment; returns its family."""
        ecs = self.setup()
        family = f"{function.name}-fargate"
        # The image's configuration: the function's LONGRUN_* and own variables, its code on
        # PYTHONPATH, and the handler for the runner's image mode.
        environment = {
            **configuration,
            "PYTHONPATH": os.pathsep.join(search_path(function)),
            "LONGRUN_HANDLER": function.handler,
            "LONGRUN_FARGATE_TASK_DEFINITION": family,
        }
        response = ecs["client"].register_task_definition(
            family=family,
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": CONTAINER,
                    "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{function.name}:local",
                    "memory": 512,  # moto needs it on the container too
                    "essential": True,
                    "command": ["longrun-runner"],
                    "environment": [{"name": k, "value": v} for k, v in environment.items()],
                }
            ],
        )
        arn = str(response["taskDefinition"]["taskDefinitionArn"])
        with self._core.cond:
            self._task_function[arn] = function.name
        return family

    def _loop(self) -> None:
        """Start every task waiting in the cluster, every ``poll_s``, until the emulator stops."""
        launcher = self._launcher
        assert launcher is not None
        while True:
            with self._core.cond:
                if self._core.stopping:
                    return
                gen = self._core.gen
            try:
                pending = launcher.pending()
            except Exception as exc:  # moto hiccup: try again
                self._core.log(f"emulator: listing ECS tasks failed: {exc}")
                pending = []
            for spec in pending:
                self._start_task(launcher, spec)
            with self._core.cond:
                if not pending:
                    self._clean_poll_gen = gen
                    self._core.cond.notify_all()
                self._core.cond.wait(self._core.poll_s)

    def _start_task(self, launcher: EcsLauncher, spec: TaskSpec) -> None:
        with self._core.cond:
            function_name = self._task_function.get(spec.task_definition_arn)
            self._running_tasks += 1
            self._core.changed()
        function = self._core.functions.get(function_name or "")
        cwd = function.code_dir if function is not None else None
        started_ms = now_ms()
        try:
            process = launcher.launch(spec, cwd=cwd)
        except Exception as exc:
            self._core.log(f"emulator: cannot run task {spec.task_arn}: {exc}")
            with self._core.cond:
                self._running_tasks -= 1
                self._core.changed()
            return
        self._core.spawn(
            self._watch_task, f"task-{spec.task_id[:8]}", process, function, started_ms
        )

    def _watch_task(
        self, process: TaskProcess, function: LocalFunction | None, started_ms: int
    ) -> None:
        """Wait for a task's process to exit, then record it."""
        spec = process.spec
        env = spec.environment
        run_id = env.get("LONGRUN_RUN_ID")
        record = InvocationRecord(
            index=next(self._core.index),
            kind="fargate",
            function=function.name if function else "?",
            where="fargate",
            request_id=f"fargate-{spec.ecs_task_id}",
            attempt=1,
            run_id=run_id,
            hop=int_or_none(env.get("LONGRUN_HOP")),
            started_ms=started_ms,
            start_s=(started_ms - self._core.t0_ms) / 1000.0,
            pid=process.pid,
            task_arn=spec.task_arn,
        )
        self._core.log(
            f"emulator: Fargate task {spec.task_id} started (run {run_id} hop {record.hop})"
        )
        try:
            code = process.wait(timeout=self._core.fargate_timeout_s)
        except TimeoutError:
            code = process.returncode if process.returncode is not None else -9
            record.reason = f"no exit within {self._core.fargate_timeout_s:g} s"
        record.ended_ms = now_ms()
        record.duration_s = (record.ended_ms - started_ms) / 1000.0
        record.log = process.stdout + process.stderr
        summary = process.summary() or {}
        if code < 0:
            record.outcome, record.reason = "killed", record.reason or f"signal {-code}"
        elif summary.get("longrun_runner") == "done":
            status = (summary.get("longrun") or {}).get("status")
            if status is None:
                record.outcome, record.response = Status.COMPLETED.value, summary.get("result")
            else:
                record.outcome, record.response = str(status), summary.get("longrun")
                if status == Answer.CONTINUED:
                    record.reason = "replacement task" + (
                        " after SIGTERM" if summary.get("stopping") else ""
                    )
        else:
            record.outcome = "error"
            record.error_message = str(summary.get("error") or f"exit status {code}")
        if function is not None and function.store is not None and run_id:
            self._checkpoints.read(function, record, run_id)
        self._core.finish(record)
        with self._core.cond:
            self._running_tasks -= 1
            self._core.changed()
