"""A stand-in for Fargate: run the tasks that ``ecs.run_task`` started (in moto) as local processes.

moto records a ``RunTask`` (task definition, overrides, tags, ``startedBy``) but runs nothing.
:class:`EcsLauncher` finds those tasks through the real ECS API (``list_tasks`` /
``describe_tasks`` / ``describe_task_definition``) and runs each task's container command as a
local process, with the environment a container would get::

    launcher = EcsLauncher(ecs_client, "jobs", base_env=base_environment(moto_url))
    [task] = launcher.pending()
    process = launcher.launch(task)
    assert process.wait(timeout=30) == 0
    assert process.summary()["longrun_runner"] == "done"

The process environment is, later entries winning: ``base_env`` (credentials, endpoints,
``PYTHONPATH``: see :func:`base_environment`), the task definition container's
``environment``, the ``containerOverrides`` ``environment``, and what the ECS agent sets in a
Fargate container (``ECS_CONTAINER_METADATA_URI_V4``, ``AWS_EXECUTION_ENV``). The command is the
override ``command`` or the container definition's; its first word is mapped through
``commands`` (by default ``longrun-runner`` and ``python`` run with this interpreter), so an
image's console script runs from the test's virtualenv.

A :class:`TaskProcess` collects stdout and stderr line by line on reader threads (no pipe can
fill up), parses the JSON lines of stdout (the runner's summary is the last one), can be sent
SIGTERM as ECS does when it stops a task, and, once it has exited, marks its task ``STOPPED`` in
moto (``stop_task``) unless told not to. Nothing here imports boto3: pass the ECS client.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = [
    "DEFAULT_COMMANDS",
    "EcsLauncher",
    "LauncherError",
    "TaskProcess",
    "TaskSpec",
    "base_environment",
]

DEFAULT_COMMANDS: Mapping[str, Sequence[str]] = {
    "longrun-runner": (sys.executable, "-m", "longrun.runner"),
    "python": (sys.executable,),
    "python3": (sys.executable,),
}
"""How the first word of a container command maps to a local command."""

_METADATA_HOST = "http://169.254.170.2"
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "HOME")


class LauncherError(Exception):
    """A task cannot be run locally (no command, unknown container, ...)."""


def base_environment(
    endpoint_url: str | None = None,
    *,
    region: str = "us-east-1",
    pythonpath: Iterable[str | os.PathLike[str]] = (),
    access_key: str = "testing",
    secret_key: str = "testing",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A minimal environment for a task process: nothing of the caller's AWS configuration.

    ``PATH``, ``LANG``, ``HOME``, ... are passed through; credentials are ``access_key`` /
    ``secret_key``; ``AWS_ENDPOINT_URL`` (every service, boto3's standard variable) is
    ``endpoint_url`` when given; ``PYTHONPATH`` holds ``pythonpath``; ``extra`` is added last.
    """
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    env.update(
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        AWS_DEFAULT_REGION=region,
        AWS_REGION=region,
        PYTHONUNBUFFERED="1",
    )
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    paths = [os.fspath(p) for p in pythonpath]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def _env_list(entries: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(e["name"]): str(e.get("value", "")) for e in entries or ()}


@dataclass(frozen=True)
class TaskSpec:
    """What one ECS task asks to run, as read back from the ECS API."""

    task_arn: str
    cluster: str
    task_definition_arn: str
    container: str
    """The container that is run (the one the overrides name, else the only one)."""
    command: tuple[str, ...]
    """The container command as ECS would run it (before :data:`DEFAULT_COMMANDS` mapping)."""
    definition_environment: dict[str, str]
    """The task definition container's ``environment``."""
    override_environment: dict[str, str]
    """The ``containerOverrides`` ``environment`` for that container."""
    overrides: dict[str, Any]
    started_by: str | None
    tags: dict[str, str]
    launch_type: str | None
    capacity_provider: str | None
    task: dict[str, Any] = field(repr=False)
    """The ``describe_tasks`` entry."""

    @property
    def task_id(self) -> str:
        """The last part of the ARN (moto: a UUID with dashes)."""
        return self.task_arn.rsplit("/", 1)[-1]

    @property
    def ecs_task_id(self) -> str:
        """The id in ECS's own shape (32 hex digits, no dashes), as it appears in a real
        container's metadata URI; moto's ids are UUIDs with dashes."""
        return self.task_id.replace("-", "")

    @property
    def environment(self) -> dict[str, str]:
        """The task's own environment: the definition's, then the overrides'."""
        return {**self.definition_environment, **self.override_environment}


class TaskProcess:
    """One task running as a local process; stdout and stderr are collected as lines."""

    def __init__(
        self,
        spec: TaskSpec,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        on_exit: Callable[[TaskProcess], None] | None = None,
    ) -> None:
        self.spec = spec
        self.argv = list(argv)
        self.env = dict(env)
        self.started = time.monotonic()
        self._on_exit = on_exit
        self._exited = False
        self._cond = threading.Condition()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: kill() reaches its children
        )
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read,
                args=(stream, lines),
                name=f"task-{spec.task_id[:8]}-{name}",
                daemon=True,
            )
            for stream, lines, name in (
                (self.popen.stdout, self._stdout, "stdout"),
                (self.popen.stderr, self._stderr, "stderr"),
            )
        ]
        for reader in self._readers:
            reader.start()

    def __repr__(self) -> str:
        return f"<TaskProcess {self.spec.task_id} pid={self.pid} returncode={self.returncode}>"

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        with stream:
            for line in stream:
                with self._cond:
                    lines.append(line.rstrip("\n"))
                    self._cond.notify_all()

    # -- state ----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal), ``None`` while running."""
        return self.popen.poll()

    @property
    def stdout(self) -> list[str]:
        """The stdout lines so far (a copy)."""
        with self._cond:
            return list(self._stdout)

    @property
    def stderr(self) -> list[str]:
        """The stderr lines so far (a copy)."""
        with self._cond:
            return list(self._stderr)

    def output(self, last: int = 60) -> str:
        """The last lines of stdout and stderr, for assertion messages."""
        return (
            f"$ {' '.join(self.argv)}  (task {self.spec.task_arn}, returncode "
            f"{self.returncode})\n--- stdout\n"
            + "\n".join(self.stdout[-last:])
            + "\n--- stderr\n"
            + "\n".join(self.stderr[-last:])
        )

    def records(self) -> list[dict[str, Any]]:
        """The stdout lines that are JSON objects, decoded (log lines are skipped)."""
        found: list[dict[str, Any]] = []
        for line in self.stdout:
            if not line.startswith("{"):
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
        return found

    def summary(self) -> dict[str, Any] | None:
        """The runner's last summary line (``{"longrun_runner": ...}``), if printed yet."""
        summaries = [r for r in self.records() if "longrun_runner" in r]
        return summaries[-1] if summaries else None

    # -- waiting --------------------------------------------------------------------------

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the process to exit; returns its exit status.

        On timeout the process is killed and :class:`TimeoutError` raised with its output.
        """
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"task process did not exit within {timeout} s\n{self.output()}"
            ) from None
        self._finish()
        return code

    def wait_for_line(
        self, predicate: Callable[[str], bool], timeout: float = 30.0, *, stream: str = "stdout"
    ) -> str:
        """Wait until a line of ``stream`` satisfies ``predicate``; returns it.

        Raises :class:`TimeoutError` (with the output) if none does in time or the process
        ends first.
        """
        lines = self._stdout if stream == "stdout" else self._stderr
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reading()):
                    break
                self._cond.wait(min(left, 0.05))
        raise TimeoutError(f"no matching {stream} line within {timeout} s\n{self.output()}")

    def _reading(self) -> bool:
        return any(reader.is_alive() for reader in self._readers)

    def _finish(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)
        if self._exited:
            return
        self._exited = True
        if self._on_exit is not None:
            self._on_exit(self)

    # -- signals --------------------------------------------------------------------------

    def terminate(self) -> None:
        """SIGTERM to the process, as ECS sends to a container it stops (Spot included)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the process group (ECS after ``stopTimeout``); waits for the exit."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        self._finish()


class EcsLauncher:
    """Runs the tasks of one ECS cluster (as recorded by moto) as local processes.

    ``client`` is a boto3 ECS client; ``base_env`` the environment every task starts from
    (:func:`base_environment`); ``cwd`` the processes' working directory; ``commands`` maps a
    container command's first word to a local command. With ``mark_stopped`` (default) a
    task whose process has exited is stopped in ECS (``stop_task``), so ``list_tasks`` with
    ``desiredStatus="RUNNING"`` shows only live ones. Use as a context manager: processes
    still running at the end are killed.
    """

    def __init__(
        self,
        client: Any,
        cluster: str,
        *,
        base_env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        commands: Mapping[str, Sequence[str]] = DEFAULT_COMMANDS,
        mark_stopped: bool = True,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.base_env = dict(base_env if base_env is not None else base_environment())
        self.cwd = None if cwd is None else Path(cwd)
        self.commands = dict(commands)
        self.mark_stopped = mark_stopped
        self.processes: list[TaskProcess] = []
        self._launched: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> EcsLauncher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill every process this launcher started that is still running (all of them,
        even if marking one stopped fails; the first such error is raised at the end)."""
        errors: list[Exception] = []
        for process in list(self.processes):
            try:
                process.kill()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- reading ECS ----------------------------------------------------------------------

    def task_arns(self, *, desired_status: str | None = "RUNNING") -> list[str]:
        """The cluster's task ARNs (all pages), by desired status (``None``: any)."""
        kwargs: dict[str, Any] = {"cluster": self.cluster}
        if desired_status is not None:
            kwargs["desiredStatus"] = desired_status
        arns: list[str] = []
        while True:
            response = self.client.list_tasks(**kwargs)
            arns.extend(response.get("taskArns") or [])
            token = response.get("nextToken")
            if not token:
                return arns
            kwargs["nextToken"] = token

    def describe(self, task_arns: Sequence[str]) -> list[dict[str, Any]]:
        """``describe_tasks`` (with tags) for ``task_arns``, 100 at a time, in that order."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(task_arns), 100):
            response = self.client.describe_tasks(
                cluster=self.cluster, tasks=list(task_arns[start : start + 100]), include=["TAGS"]
            )
            for task in response.get("tasks") or []:
                found[task["taskArn"]] = task
        return [found[arn] for arn in task_arns if arn in found]

    def spec(self, task: str | Mapping[str, Any] | TaskSpec) -> TaskSpec:
        """What ``task`` (an ARN or a ``describe_tasks`` entry) asks to run."""
        if isinstance(task, TaskSpec):
            return task
        if isinstance(task, str):
            described = self.describe([task])
            if not described:
                raise LauncherError(f"task {task} is not in cluster {self.cluster!r}")
            entry = described[0]
        else:
            entry = dict(task)
        definition = self.client.describe_task_definition(
            taskDefinition=entry["taskDefinitionArn"]
        )["taskDefinition"]
        containers = {c["name"]: c for c in definition.get("containerDefinitions") or []}
        overrides = entry.get("overrides") or {}
        container_overrides = overrides.get("containerOverrides") or []
        if container_overrides:
            name = container_overrides[0].get("name")
        elif len(containers) == 1:
            name = next(iter(containers))
        else:
            raise LauncherError(
                f"task {entry['taskArn']} has {len(containers)} containers and no override "
                "naming one: which to run is ambiguous"
            )
        if name not in containers:
            raise LauncherError(
                f"task {entry['taskArn']}: its overrides name container {name!r}, which task "
                f"definition {entry['taskDefinitionArn']} does not have ({sorted(containers)})"
            )
        container = containers[name]
        override: dict[str, Any] = next(
            (o for o in container_overrides if o.get("name") == name), {}
        )
        command = override.get("command") or container.get("command")
        if not command:
            raise LauncherError(
                f"task {entry['taskArn']}: container {name!r} has no command (an image "
                "entry point cannot be run locally); give the container definition a command"
            )
        return TaskSpec(
            task_arn=entry["taskArn"],
            cluster=self.cluster,
            task_definition_arn=entry["taskDefinitionArn"],
            container=name,
            command=tuple(str(part) for part in command),
            definition_environment=_env_list(container.get("environment")),
            override_environment=_env_list(override.get("environment")),
            overrides=dict(overrides),
            started_by=entry.get("startedBy"),
            tags={str(t["key"]): str(t.get("value", "")) for t in entry.get("tags") or []},
            launch_type=entry.get("launchType") or None,
            capacity_provider=entry.get("capacityProviderName") or None,
            task=entry,
        )

    def pending(self) -> list[TaskSpec]:
        """Tasks still desired RUNNING that this launcher has not launched yet."""
        with self._lock:
            arns = [arn for arn in self.task_arns() if arn not in self._launched]
        return [self.spec(task) for task in self.describe(arns)]

    def wait_for_tasks(
        self,
        count: int = 1,
        *,
        timeout: float = 10.0,
        predicate: Callable[[TaskSpec], bool] | None = None,
        interval: float = 0.05,
    ) -> list[TaskSpec]:
        """Poll until at least ``count`` pending tasks (matching ``predicate``) exist."""
        deadline = time.monotonic() + timeout
        while True:
            found = [t for t in self.pending() if predicate is None or predicate(t)]
            if len(found) >= count or time.monotonic() >= deadline:
                break
            time.sleep(interval)
        if len(found) < count:
            raise TimeoutError(
                f"{len(found)} pending task(s) in cluster {self.cluster!r} after {timeout} s, "
                f"wanted {count}"
            )
        return found

    # -- running --------------------------------------------------------------------------

    def environment(self, spec: TaskSpec, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment ``spec`` runs with (see the module docstring for the order)."""
        env = {**self.base_env, **spec.environment}
        env.update(
            ECS_CONTAINER_METADATA_URI_V4=f"{_METADATA_HOST}/v4/{spec.ecs_task_id}-1",
            ECS_CONTAINER_METADATA_URI=f"{_METADATA_HOST}/v3/{spec.ecs_task_id}-1",
            AWS_EXECUTION_ENV="AWS_ECS_FARGATE",
        )
        env.update(extra or {})
        return env

    def argv(self, spec: TaskSpec) -> list[str]:
        """The local command for ``spec``'s container command."""
        first, *rest = spec.command
        return [*self.commands.get(first, (first,)), *rest]

    def launch(
        self,
        task: str | Mapping[str, Any] | TaskSpec,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> TaskProcess:
        """Start ``task``'s container command as a local process (``env`` is added last).

        A task may be launched more than once (e.g. to play a duplicate delivery).
        """
        spec = self.spec(task)
        process = TaskProcess(
            spec,
            self.argv(spec),
            self.environment(spec, env),
            cwd=cwd if cwd is not None else self.cwd,
            on_exit=self._exited if self.mark_stopped else None,
        )
        with self._lock:
            self._launched.add(spec.task_arn)
            self.processes.append(process)
        return process

    def launch_pending(self, *, env: Mapping[str, str] | None = None) -> list[TaskProcess]:
        """Launch every pending task."""
        return [self.launch(spec, env=env) for spec in self.pending()]

    def stop(self, task_arn: str, reason: str = "Stopped by EcsLauncher") -> None:
        """Mark ``task_arn`` STOPPED in ECS (``stop_task``); its process is left alone."""
        self.client.stop_task(cluster=self.cluster, task=task_arn, reason=reason)

    def _exited(self, process: TaskProcess) -> None:
        code = process.returncode
        reason = (
            "Essential container in task exited"
            if code is not None and code >= 0
            else f"Task process killed (signal {-(code or 0)})"
        )
        self.stop(process.spec.task_arn, reason)
