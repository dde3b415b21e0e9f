"""The container entry point: ``python -m longrun.runner`` / ``longrun-runner``.

A Fargate task started by an escalation runs this. It finds the handler, builds a context
with a long remaining time, and invokes the handler with the run's envelope, so the run is
claimed with the same fencing as a Lambda hop and resumed from its checkpoint.

* Image mode: ``LONGRUN_HANDLER=package.module.function`` is imported from the image (a
  Lambda container image with its entry point overridden works as is).
* Function mode: ``LONGRUN_FUNCTION_NAME=name`` calls ``lambda.get_function``, downloads and
  unzips ``Code.Location``, merges ``Configuration.Environment.Variables`` into the environment
  *before* importing, and imports ``Configuration.Handler`` from the code.

With ``LONGRUN_RUN_ID`` and ``LONGRUN_HOP`` the runner resumes that run. With
``LONGRUN_EVENT_URI`` instead (the safety net, for an undecorated function) it loads that
event and runs the handler on it once, with no longrun bookkeeping.

SIGTERM (a Spot interruption's two-minute notice, or a stop) turns the remaining time into
``LONGRUN_FARGATE_STOP_S`` seconds: the handler's next ``run.iterate`` step or
``should_yield()`` ends the hop, the run is checkpointed and a replacement task is started,
and the runner exits 0 inside ECS's ``stopTimeout``.

Exit status: 0 when the run completed, continued in a replacement task, or was not this
task's to run (a duplicate); 1 when the handler or longrun failed (the error is recorded in
the checkpoint and printed); 2 for a bad configuration.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import io
import json
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ports
from .checkpoint import make_envelope, validate_run_id
from .config import (
    DEFAULT_FARGATE_LEASE_S,
    DEFAULT_FARGATE_MAX_S,
    DEFAULT_FARGATE_STOP_S,
    ENV_EVENT_URI,
    ENV_FARGATE_LEASE_S,
    ENV_FARGATE_MAX_S,
    ENV_FARGATE_STOP_S,
    ENV_FUNCTION_NAME,
    ENV_HANDLER,
    ENV_HOP,
    ENV_RUN_ID,
    ENV_TENANT_ID,
    _seconds,
    environment,
    runner_target,
)
from .errors import LongrunConfigError, LongrunError


@dataclass(frozen=True)
class RunnerSettings:
    """Settings of the container runner itself (here, not in ``config``: a function's cold
    start never needs them)."""

    max_s: float
    lease_s: float
    stop_s: float


def resolve_runner(env: Mapping[str, str] | None = None) -> RunnerSettings:
    """The container runner's own limits (``LONGRUN_FARGATE_MAX_S``, ``_LEASE_S``, ``_STOP_S``)."""
    env = os.environ if env is None else env

    def seconds(env_name: str, default: float) -> float:
        raw = env.get(env_name)
        value = default if not raw else _seconds(env_name, raw)
        assert value is not None
        return value

    return RunnerSettings(
        max_s=seconds(ENV_FARGATE_MAX_S, DEFAULT_FARGATE_MAX_S),
        lease_s=seconds(ENV_FARGATE_LEASE_S, DEFAULT_FARGATE_LEASE_S),
        stop_s=seconds(ENV_FARGATE_STOP_S, DEFAULT_FARGATE_STOP_S),
    )


__all__ = ["ContainerContext", "load_handler", "main"]

log = logging.getLogger("longrun.runner")

# Never taken from a function's configuration: they say what this task is for.
_PROTECTED = {ENV_RUN_ID, ENV_HOP, ENV_HANDLER, ENV_FUNCTION_NAME, ENV_EVENT_URI}


class ContainerContext:
    """A Lambda-like context for a container: a long remaining time, cut short by SIGTERM."""

    longrun_where = "fargate"

    def __init__(
        self,
        settings: RunnerSettings,
        *,
        function_name: str = "longrun-runner",
        function_arn: str | None = None,
        request_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._deadline = clock() + settings.max_s
        self._stop_s = settings.stop_s
        self.longrun_lease_s = settings.lease_s
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = environment().get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0")
        self.aws_request_id = request_id or f"fargate-{uuid.uuid4()}"
        self.log_group_name = ""
        self.log_stream_name = ""
        self.identity = None
        self.client_context = None
        self.tenant_id = environment().get(ENV_TENANT_ID) or None
        """The run's tenant (per-tenant isolation mode), from the task's overrides."""
        self.stopping = False

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left: up to ``LONGRUN_FARGATE_MAX_S``, or the SIGTERM grace."""
        return max(0, int((self._deadline - self._clock()) * 1000))

    def stop(self) -> None:
        """SIGTERM arrived: leave ``LONGRUN_FARGATE_STOP_S`` seconds to checkpoint and hand over."""
        self.stopping = True
        self._deadline = min(self._deadline, self._clock() + self._stop_s)


def _task_id() -> str | None:
    """This task's id, from the ECS task metadata endpoint's URL (no request needed)."""
    uri = environment().get("ECS_CONTAINER_METADATA_URI_V4", "")
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    return tail.split("-")[0] if tail else None


def load_handler(path: str) -> Callable[..., Any]:
    """Import ``package.module.function`` (Lambda's handler syntax; ``dir/module.function`` too)."""
    module_path, _, attribute = path.replace("/", ".").rpartition(".")
    if not module_path or not attribute:
        raise LongrunConfigError(
            f"handler {path!r} is not of the form module.function (e.g. app.handler)."
        )
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise LongrunConfigError(
            f"cannot import {module_path!r} for handler {path!r}: {exc}"
        ) from exc
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise LongrunConfigError(
            f"{module_path!r} has no callable {attribute!r} (handler {path!r})."
        )
    return handler  # type: ignore[no-any-return]


def fetch_function(
    function_name: str, *, client: Any = None
) -> tuple[str, dict[str, Any], Path | None]:
    """Download a Lambda function's code; merge its environment.

    Returns the handler path, the function's configuration and the code directory (``None``
    for an image function, whose code is the image this runner runs in).
    """
    if client is None:
        import boto3

        client = boto3.session.Session().client("lambda")
    response = client.get_function(FunctionName=function_name)
    configuration = response.get("Configuration") or {}
    location = (response.get("Code") or {}).get("Location")
    handler = configuration.get("Handler")
    if configuration.get("PackageType") == "Image" or not location:
        # An image function: its code is this image; only its environment is merged, and
        # the handler is LONGRUN_HANDLER or the function's image command override.
        _merge_environment(configuration)
        image_config = (configuration.get("ImageConfigResponse") or {}).get("ImageConfig") or {}
        command = image_config.get("Command") or []
        return (command[0] if command else ""), configuration, None
    if not handler:
        raise LongrunConfigError(f"lambda.get_function({function_name!r}) returned no handler.")
    with urllib.request.urlopen(location, timeout=60) as reply:
        data = reply.read()
    target = Path(tempfile.mkdtemp(prefix="longrun-function-"))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.namelist():
            resolved = (target / member).resolve()
            if not resolved.is_relative_to(target.resolve()):
                raise LongrunError(f"function code archive has an unsafe path: {member!r}")
        archive.extractall(target)
    _merge_environment(configuration)
    return str(handler), configuration, target


def _merge_environment(configuration: Mapping[str, Any]) -> None:
    """The function's variables, before its code is imported (never the task's own)."""
    variables = (configuration.get("Environment") or {}).get("Variables") or {}
    env = environment()
    for name, value in variables.items():
        if name not in _PROTECTED:
            env[name] = str(value)


def _load_event(uri: str) -> Any:
    """The event a safety net stored for an undecorated function (s3:// or file://)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        import boto3

        body = (
            boto3.session.Session()
            .client("s3")
            .get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
            .read()
        )
    elif parsed.scheme == "file":
        body = Path(unquote(parsed.path)).read_bytes()
    else:
        raise LongrunConfigError(f"{ENV_EVENT_URI}={uri!r}: use s3://bucket/key or file:///path.")
    return json.loads(body)


class _StopSignal:
    """SIGTERM handling that works before the context exists."""

    def __init__(self) -> None:
        self.context: ContainerContext | None = None
        self.received = False

    def handle(self, signum: int, frame: Any) -> None:
        self.received = True
        if self.context is not None:
            self.context.stop()

    def attach(self, context: ContainerContext) -> None:
        self.context = context
        if self.received:
            context.stop()


class LeaseKeeper(ports.Observer):
    """Starts, for every claimed hop, a heartbeat that renews the task's lease."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.lease_lost = threading.Event()

    def on_run(self, run: Any, heartbeat: Callable[[], bool]) -> None:
        threading.Thread(
            target=keep_lease,
            args=(heartbeat, self.interval_s, self.stop, self.lease_lost, run.id),
            name="longrun-heartbeat",
            daemon=True,
        ).start()


def keep_lease(
    heartbeat: Callable[[], bool],
    interval_s: float,
    stop: threading.Event,
    lost: threading.Event,
    run_id: str,
    *,
    first_retry_s: float = 1.0,
) -> None:
    """Renew the lease every ``interval_s`` until ``stop``; a store error is retried with
    backoff (the lease is still ours until it expires); only a lost lease ends the beat,
    and sets ``lost``."""
    while not stop.wait(interval_s):
        delay = min(first_retry_s, interval_s)
        while True:
            try:
                renewed = heartbeat()
                break
            except Exception as exc:  # a slow or failing store: try again, sooner than later
                log.warning("run %s: lease renewal failed (%s); retrying", run_id, exc)
                if stop.wait(delay * (0.5 + random.random())):
                    return
                delay = min(delay * 2, interval_s)
        if not renewed:
            log.warning("run %s: lease lost (cancelled or taken over)", run_id)
            lost.set()
            return


def _call(handler: Callable[..., Any], event: Any, context: ContainerContext) -> Any:
    result = handler(event, context)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the task's work; returns the exit status."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # SIGTERM may come while the code is still being fetched or imported: remember it, and
    # give the context the short deadline as soon as there is one.
    stop = _StopSignal()
    signal.signal(signal.SIGTERM, stop.handle)
    try:
        target = runner_target(env)
        function_arn: str | None = None
        function_name: str | None = None
        if target[ENV_FUNCTION_NAME]:
            handler_path, configuration, code_dir = fetch_function(str(target[ENV_FUNCTION_NAME]))
            function_arn = configuration.get("FunctionArn")
            function_name = configuration.get("FunctionName")
            if code_dir is None:
                handler_path = str(target[ENV_HANDLER] or handler_path)
                if not handler_path:
                    raise LongrunConfigError(
                        f"{target[ENV_FUNCTION_NAME]!r} is an image function: set "
                        f"{ENV_HANDLER}=module.function in the task (its code is the image)."
                    )
                sys.path.insert(0, os.getcwd())
            else:
                sys.path.insert(0, str(code_dir))
        elif target[ENV_HANDLER]:
            handler_path = str(target[ENV_HANDLER])
            sys.path.insert(0, os.getcwd())
        else:
            raise LongrunConfigError(
                f"the runner needs {ENV_HANDLER}=module.function (image mode) or "
                f"{ENV_FUNCTION_NAME}=name (function mode) in its environment."
            )
        handler = load_handler(handler_path)
        settings = resolve_runner(env)  # after a function's variables were merged
        if target[ENV_RUN_ID]:
            run_id = validate_run_id(target[ENV_RUN_ID], source=ENV_RUN_ID)
            try:
                hop = int(str(target[ENV_HOP]))
            except ValueError:
                raise LongrunConfigError(
                    f"{ENV_HOP}={target[ENV_HOP]!r} is not a hop number."
                ) from None
            event: Any = make_envelope(run_id, hop)
        elif target[ENV_EVENT_URI]:
            event = _load_event(str(target[ENV_EVENT_URI]))
        else:
            raise LongrunConfigError(
                f"the runner needs {ENV_RUN_ID} and {ENV_HOP} (resume a run) or {ENV_EVENT_URI} "
                "(run one event)."
            )
    except LongrunError as exc:
        print(json.dumps({"longrun_runner": "config_error", "error": str(exc)}), flush=True)
        return 2
    except Exception as exc:  # the code failed to download or import: say so, then exit
        log.exception("could not load the handler")
        print(
            json.dumps({"longrun_runner": "failed", "error": f"{type(exc).__name__}: {exc}"}),
            flush=True,
        )
        return 1

    task = _task_id()
    context = ContainerContext(
        settings,
        function_name=function_name or handler_path.rsplit(".", 1)[0],
        function_arn=function_arn,
        request_id=f"fargate-{task}" if task else None,
    )
    stop.attach(context)
    keeper = LeaseKeeper(interval_s=max(0.1, settings.lease_s / 3))
    started = time.monotonic()
    try:
        with ports.installed(observer=keeper):
            result = _call(handler, event, context)
    except Exception as exc:
        log.exception("handler failed")
        print(
            json.dumps({"longrun_runner": "failed", "error": f"{type(exc).__name__}: {exc}"}),
            flush=True,
        )
        return 1
    finally:
        keeper.stop.set()
    summary: dict[str, Any] = {
        "longrun_runner": "done",
        "seconds": round(time.monotonic() - started, 3),
    }
    if isinstance(result, dict) and isinstance(result.get("longrun"), dict):
        summary["longrun"] = result["longrun"]
    else:
        summary["result"] = result if _jsonable(result) else repr(result)
    summary["stopping"] = context.stopping
    if keeper.lease_lost.is_set():  # another invocation took the run over, or a cancel
        summary["lease_lost"] = True
    print(json.dumps(summary, default=str), flush=True)
    return 0


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def run() -> None:
    """Console-script entry point (``longrun-runner``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
