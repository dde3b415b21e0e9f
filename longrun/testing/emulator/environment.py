"""The environment variables a function gets: its configuration, and what Lambda sets."""

from __future__ import annotations

import secrets
import sys
from datetime import datetime, timezone

from ...ports import ENV_CLOCK_OFFSET_FILE
from ..ecs_launcher import base_environment
from .core import Core
from .fargate import FargateInMoto
from .functions import LocalFunction, search_path
from .helpers import REGION
from .scheduler import ROLE_ARN


class Environments:
    """Builds a function's environment: for its Invoke API package and task definition
    (:meth:`config_env`), and for one invocation's process (:meth:`invocation_env`)."""

    def __init__(self, core: Core, fargate: FargateInMoto) -> None:
        self._core = core
        self._fargate = fargate

    def config_env(self, function: LocalFunction) -> dict[str, str]:
        """The function's configuration: ``LONGRUN_*`` and its own variables (what a task
        definition for the same code would carry too)."""
        env: dict[str, str] = {}
        if function.store_uri:
            env["LONGRUN_CHECKPOINT_URI"] = function.store_uri
            # Over the decorator's own store too: the emulator reads its checkpoints there.
            env["LONGRUN_LOCAL_CHECKPOINT_URI"] = function.store_uri
        if function.max_hops is not None:
            env["LONGRUN_MAX_HOPS"] = str(function.max_hops)
        if function.escalate:
            env.update(self._fargate.environment())
            if function.task_definition:
                env["LONGRUN_FARGATE_TASK_DEFINITION"] = function.task_definition
        if self._core.fast_waits:  # the emulated clock, shared by every process
            env[ENV_CLOCK_OFFSET_FILE] = str(self._core.clock_file)
        env.update(function.env)
        return env

    def invocation_env(self, function: LocalFunction, runtime_api: str) -> dict[str, str]:
        """One invocation's process: :meth:`_function_env`, its Runtime API and log stream."""
        env = self._function_env(function)
        now = datetime.now(tz=timezone.utc)
        env.update(
            AWS_LAMBDA_RUNTIME_API=runtime_api,
            AWS_LAMBDA_LOG_STREAM_NAME=f"{now:%Y/%m/%d}/[$LATEST]{secrets.token_hex(16)}",
        )
        env.pop("AWS_LAMBDA_MAX_CONCURRENCY", None)  # would switch awslambdaric to LMI mode
        return env

    def _function_env(self, function: LocalFunction) -> dict[str, str]:
        """What Lambda sets for a function, then its configuration (:meth:`config_env`)."""
        env = base_environment(
            self._core.moto.url if (self._core.moto.started or function.escalate) else None,
            region=REGION,
            pythonpath=search_path(function),
        )
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        env.update(
            AWS_LAMBDA_FUNCTION_NAME=function.name,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(function.memory_mb),
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{function.name}",
            AWS_LAMBDA_INITIALIZATION_TYPE="on-demand",
            AWS_EXECUTION_ENV=f"AWS_Lambda_python{version}",
            AWS_ENDPOINT_URL_LAMBDA=self._core.endpoint.url,
            LAMBDA_TASK_ROOT=str(function.code_dir),
            _HANDLER=function.handler,
            TZ=":UTC",
        )
        # Waits longer than a hop make a wake-up schedule: in the emulator's moto, fired by it.
        env.update(
            LONGRUN_SCHEDULER_ROLE_ARN=ROLE_ARN,
            AWS_ENDPOINT_URL_SCHEDULER=self._core.moto.url,
        )
        if function.tracing and self._core.xray is not None:
            env.update(
                AWS_XRAY_DAEMON_ADDRESS=self._core.xray.address,
                AWS_XRAY_CONTEXT_MISSING="LOG_ERROR",
            )
        env.update(self.config_env(function))
        return env
