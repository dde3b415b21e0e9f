"""A process-level local Lambda: the real ``awslambdaric`` runtime, killed at its deadline.

:class:`LocalLambda` runs a handler the way Lambda runs it, with no Docker and no AWS account:

* **One process per invocation.** Each invocation starts
  ``python -m awslambdaric module.function`` in its own process group, with
  ``AWS_LAMBDA_RUNTIME_API`` pointing at a :class:`~longrun.testing.runtime_api.RuntimeApi`
  of its own and the environment Lambda gives a function (``AWS_LAMBDA_FUNCTION_NAME``,
  ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, ``AWS_LAMBDA_FUNCTION_VERSION``, log group and stream,
  ``AWS_REGION``, ...; never ``AWS_LAMBDA_MAX_CONCURRENCY``, which would switch the runtime to
  its multi-concurrency mode). The deadline starts when the runtime takes the invocation
  (``next``), as Lambda's invoke phase does; at the deadline the process group gets SIGKILL and
  ``Task timed out after N.NN seconds`` is logged. Once the runtime posted its answer the
  process is killed too (a new invocation never reuses it: every hop is a cold start).
* **Invoke API.** boto3 in the function reaches an
  :class:`~longrun.testing.invoke_endpoint.InvokeEndpoint` through ``AWS_ENDPOINT_URL_LAMBDA``.
  ``Event`` invocations are queued and delivered; one that fails (an error, a timeout, a crash)
  is retried with the same event and request id (2 retries by default, after short delays);
  ``duplicate_rate`` delivers an event a second time (same request id) after a random delay
  from a seeded RNG; an event that failed every retry goes to the function's on-failure
  target: by default the safety net (``longrun.safety_net.handler``), itself run as an
  emulated function, with a Lambda destination record. ``RequestResponse`` invocations run the
  same way and answer the caller. Payload limits (1 MB async, 6 MB sync and response) are
  enforced with Lambda's error names.
* **Checkpoints** go to a directory (``file://``, the default) or to S3 in a moto server the
  emulator starts (``store="s3://bucket/prefix/"``); the function gets
  ``LONGRUN_CHECKPOINT_URI``, and the emulator reads the checkpoint after every invocation.
* **Fargate.** The same moto serves ECS and EC2: a cluster, a VPC with a subnet and a security
  group, and per function a FARGATE task definition whose container runs ``longrun-runner`` with
  ``LONGRUN_HANDLER`` and the function's environment. The function gets ``LONGRUN_FARGATE_*``;
  each task it (or the safety net) starts is run as a local runner process by an
  :class:`~longrun.testing.ecs_launcher.EcsLauncher`.

:meth:`LocalLambda.wait` returns when the run has settled (nothing queued, no invocation or
task running, no task waiting to start) with a :class:`Report`: one
:class:`InvocationRecord` per invocation and per task, and a :class:`RunSummary` per run,
including the hop hand-off latencies (see :class:`Handoff` for exactly what is measured).
"""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from ..checkpoint import parse_envelope
from ..errors import LongrunError
from ..stores.base import CheckpointStore, Loaded
from ._http import StartStop
from .ecs_launcher import EcsLauncher, TaskProcess, TaskSpec, base_environment
from .invoke_endpoint import InvokeEndpoint, InvokeRequest
from .runtime_api import RuntimeApi, RuntimeInvocation

__all__ = [
    "SAFETY_NET_HANDLER",
    "FunctionError",
    "Handoff",
    "InvocationRecord",
    "LocalFunction",
    "LocalLambda",
    "MotoServer",
    "Report",
    "RunSummary",
    "parse_handler",
]

SAFETY_NET_HANDLER = "longrun.safety_net.handler"
REGION = "us-east-1"
ACCOUNT = "123456789012"
CONTAINER = "worker"
DEFAULT_RETRY_DELAYS_S = (0.5, 1.0)
INIT_TIMEOUT_S = 10.0
"""Lambda gives a function's init (imports) 10 seconds."""

_LONGRUN_ROOT = Path(__file__).resolve().parents[2]
_FARGATE_STOP_S = "2"


class FunctionError(LongrunError):
    """A synchronous invocation answered with a function error (``X-Amz-Function-Error``)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = dict(document)
        self.error_type = str(document.get("errorType") or "")
        super().__init__(f"{self.error_type}: {document.get('errorMessage')}")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_handler(spec: str, cwd: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """``path/app.py:handler`` → (``path``, ``app.handler``); ``pkg.mod:handler`` and
    ``pkg.mod.handler`` → (``cwd``, ``pkg.mod.handler``). The directory is put on the
    function's ``PYTHONPATH`` and is its working directory."""
    base = Path(cwd or os.getcwd()).resolve()
    if ":" in spec:
        left, _, function = spec.rpartition(":")
        if left.endswith(".py") or "/" in left or os.sep in left:
            path = (base / left).resolve()
            if not path.is_file():
                raise LongrunError(f"handler {spec!r}: no file {path}")
            if not function.isidentifier():
                raise LongrunError(f"handler {spec!r}: {function!r} is not a function name")
            return path.parent, f"{path.stem}.{function}"
        module = left
    else:
        module, _, function = spec.rpartition(".")
    if not module or not function.isidentifier():
        raise LongrunError(
            f"handler {spec!r} is not FILE.py:function, package.module:function or "
            "package.module.function"
        )
    return base, f"{module}.{function}"


# -- moto -------------------------------------------------------------------------------------


class MotoServer:
    """A moto server on 127.0.0.1 (S3, ECS, EC2), started on first use; or an existing one."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._owned: Any = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        with self._lock:
            if self._url is None:
                import logging

                from moto.server import ThreadedMotoServer

                logging.getLogger("werkzeug").setLevel(logging.ERROR)
                server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                server.start()
                host, port = server.get_host_and_port()
                self._owned, self._url = server, f"http://{host}:{port}"
            return self._url

    @property
    def started(self) -> bool:
        return self._url is not None

    def client(self, service: str) -> Any:
        import boto3

        session: Any = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        return session.client(service, endpoint_url=self.url)

    def stop(self) -> None:
        with self._lock:
            server, self._owned = self._owned, None
            if server is not None:
                server.stop()
                self._url = None


# -- records ----------------------------------------------------------------------------------


@dataclass
class InvocationRecord:
    """One invocation (a Lambda process) or one Fargate task, as the emulator saw it."""

    index: int
    kind: str
    """``start``, ``hop`` (a continuation envelope), ``retry``, ``duplicate``, ``sync``,
    ``safety-net`` (an on-failure delivery) or ``fargate`` (a task)."""
    function: str
    where: str
    """``lambda`` or ``fargate``."""
    request_id: str
    attempt: int
    run_id: str | None = None
    hop: int | None = None
    """The hop this invocation claimed (from the checkpoint), else the hop it was sent for."""
    started_ms: int = 0
    ended_ms: int = 0
    start_s: float = 0.0
    """Seconds since the emulator started."""
    init_ms: float | None = None
    """Process start to the runtime's first ``next`` (imports: a cold start)."""
    duration_s: float = 0.0
    """Invoke phase (``next`` to answer or kill) for Lambda; process lifetime for a task."""
    outcome: str = "running"
    """``completed``, ``continued``, ``escalated``, ``duplicate``, ``superseded``,
    ``cancelled``, ``existing``, ``killed``, ``crashed``, ``error``, or the safety net's
    action (``escalated``, ``skipped``, ``started``, ...)."""
    reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    response: Any = None
    items: int | None = None
    """Items this invocation's hop entry holds in the checkpoint (what it saved)."""
    checkpoint_bytes: int | None = None
    checkpoint_status: str | None = None
    unsaved_ms: int | None = None
    """For a killed hop: kill time minus its last checkpoint write (the window whose items
    are done again by the retry)."""
    send_ms: int | None = None
    """For a hop that handed off: its ``continued``/``escalated`` write to the runtime's
    answer, i.e. what sending the next hop (Invoke or RunTask) cost inside the invocation."""
    pid: int | None = None
    task_arn: str | None = None
    log: list[str] = field(default_factory=list, repr=False)
    event_hop: int | None = field(default=None, repr=False)
    payload: bytes = field(default=b"", repr=False)
    killed_at_ms: int | None = field(default=None, repr=False)
    exit_code: int | None = field(default=None, repr=False)
    answered_ms: int | None = field(default=None, repr=False)
    memory_mb: int | None = field(default=None, repr=False)
    """The runtime process's own exit status, if it exited before being killed."""

    @property
    def end_s(self) -> float:
        return self.start_s + (self.ended_ms - self.started_ms) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        keep = (
            "index",
            "kind",
            "function",
            "where",
            "request_id",
            "attempt",
            "run_id",
            "hop",
            "started_ms",
            "ended_ms",
            "start_s",
            "init_ms",
            "duration_s",
            "outcome",
            "reason",
            "error_type",
            "error_message",
            "response",
            "items",
            "checkpoint_bytes",
            "checkpoint_status",
            "unsaved_ms",
            "send_ms",
            "pid",
            "task_arn",
        )
        data = {name: getattr(self, name) for name in keep}
        data["end_s"] = round(self.end_s, 3)
        data["start_s"] = round(self.start_s, 3)
        data["duration_s"] = round(self.duration_s, 3)
        return data

    def line(self) -> str:
        """One line for a terminal."""
        hop = "-" if self.hop is None else str(self.hop)
        items = "-" if self.items is None else str(self.items)
        size = "-" if self.checkpoint_bytes is None else _size(self.checkpoint_bytes)
        where = self.where if self.where == "lambda" else f"{self.where:7}"
        what = self.outcome + (f" ({self.reason})" if self.reason else "")
        return (
            f"[{self.start_s:7.2f}s] {self.kind:10} hop {hop:>2} {where:7} "
            f"{self.duration_s:6.2f}s  items {items:>5}  ckpt {size:>8}  {what}"
        )


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} kB"


@dataclass(frozen=True)
class Handoff:
    """One hop hand-off, measured from the checkpoint alone.

    ``ms`` is the next hop's claim time (its hop entry's ``started_ms``, written when the new
    invocation has started, imported the handler, loaded the checkpoint and claimed it, just
    before user code runs) minus the yielding hop's ``continued`` (or ``escalated``) write
    (its hop entry's ``ended_ms``, equal to the checkpoint's ``updated_ms`` of that write).
    """

    run_id: str
    from_hop: int
    to_hop: int
    via: str
    """Where the next hop ran: ``lambda`` (async Invoke) or ``fargate`` (RunTask)."""
    written_ms: int
    claimed_ms: int

    @property
    def ms(self) -> int:
        return self.claimed_ms - self.written_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_hop": self.from_hop,
            "to_hop": self.to_hop,
            "via": self.via,
            "written_ms": self.written_ms,
            "claimed_ms": self.claimed_ms,
            "ms": self.ms,
        }


@dataclass
class RunSummary:
    """A run as its last checkpoint and the invocations that touched it tell it."""

    run_id: str
    function: str
    status: str | None
    result: Any
    error: Any
    hops: list[dict[str, Any]]
    """The checkpoint's hop entries (every attempt)."""
    items: int
    lambda_hops: int
    fargate_hops: int
    invocations: int
    kills: int
    retries: int
    duplicates_delivered: int
    duplicates_refused: int
    safety_net: int
    handoffs: list[Handoff]
    checkpoint_bytes: int | None
    started_ms: int
    ended_ms: int

    @property
    def elapsed_s(self) -> float:
        return (self.ended_ms - self.started_ms) / 1000.0

    def handoff_median_ms(self, via: str | None = "lambda") -> float | None:
        values = [h.ms for h in self.handoffs if via is None or h.via == via]
        return statistics.median(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "function": self.function,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "items": self.items,
            "lambda_hops": self.lambda_hops,
            "fargate_hops": self.fargate_hops,
            "invocations": self.invocations,
            "kills": self.kills,
            "retries": self.retries,
            "duplicates_delivered": self.duplicates_delivered,
            "duplicates_refused": self.duplicates_refused,
            "safety_net": self.safety_net,
            "handoffs": [h.to_dict() for h in self.handoffs],
            "handoff_median_ms": self.handoff_median_ms("lambda"),
            "handoff_to_fargate_ms": self.handoff_median_ms("fargate"),
            "checkpoint_bytes": self.checkpoint_bytes,
            "elapsed_s": round(self.elapsed_s, 3),
            "hops": self.hops,
        }

    def lines(self) -> list[str]:
        median = self.handoff_median_ms("lambda")
        handoff = "-" if median is None else f"{median:.0f} ms"
        result = json.dumps(self.result, default=str)
        if len(result) > 200:
            result = result[:200] + "..."
        return [
            f"run {self.run_id}: {self.status} in {self.elapsed_s:.2f}s, "
            f"{self.lambda_hops} Lambda hop(s) + {self.fargate_hops} Fargate, "
            f"{self.invocations} invocation(s), {self.items} item(s)",
            f"  kills {self.kills}, retries {self.retries}, duplicates delivered "
            f"{self.duplicates_delivered} / refused {self.duplicates_refused}, "
            f"safety net {self.safety_net}, hand-off median {handoff} "
            "(continued write -> next hop's claim)",
            f"  result {result}"
            + (f"  error {self.error.get('type')}" if isinstance(self.error, dict) else ""),
        ]


@dataclass
class Report:
    """Everything that happened in the emulator, as of :meth:`LocalLambda.report`."""

    invocations: list[InvocationRecord]
    runs: list[RunSummary]
    dead_letters: list[dict[str, Any]]
    elapsed_s: float

    def run(self, run_id: str | None = None) -> RunSummary:
        """The summary of ``run_id`` (default: the only, or first, run)."""
        if run_id is None:
            if not self.runs:
                raise LookupError("no run was recorded")
            return self.runs[0]
        for run in self.runs:
            if run.run_id == run_id:
                return run
        raise LookupError(f"no run {run_id!r} (runs: {[r.run_id for r in self.runs]})")

    def of_run(self, run_id: str) -> list[InvocationRecord]:
        return [r for r in self.invocations if r.run_id == run_id]

    def to_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": round(self.elapsed_s, 3),
            "runs": [r.to_dict() for r in self.runs],
            "invocations": [r.to_dict() for r in self.invocations],
            "dead_letters": self.dead_letters,
        }

    def text(self) -> str:
        lines = [r.line() for r in self.invocations]
        for run in self.runs:
            lines.extend(run.lines())
        if self.dead_letters:
            lines.append(f"dead letters: {len(self.dead_letters)}")
        return "\n".join(lines)


# -- functions --------------------------------------------------------------------------------

KillAfter = Callable[[InvocationRecord], float | None]
"""Called when an invocation starts its invoke phase; seconds after which to SIGKILL its
process group (an out-of-memory kill, a host failure), or ``None``."""


@dataclass
class LocalFunction:
    """A function deployed on the emulator (see :meth:`LocalLambda.deploy`)."""

    name: str
    handler: str
    """``module.function`` as ``awslambdaric`` takes it."""
    code_dir: Path
    timeout_s: float
    memory_mb: int
    env: dict[str, str]
    """The function's own variables (set last, over the emulator's)."""
    retries: int
    retry_delays_s: tuple[float, ...]
    duplicate_rate: float
    duplicate_delay_s: float
    on_failure: str | None
    store_uri: str | None
    store: CheckpointStore | None
    max_hops: int | None
    escalate: bool
    task_definition: str | None = None
    kill_after: KillAfter | None = None
    pythonpath: tuple[str, ...] = ()

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.name}"

    def retry_delay(self, attempt: int) -> float:
        """Delay before attempt ``attempt`` (2 = the first retry)."""
        if not self.retry_delays_s:
            return 0.0
        return self.retry_delays_s[min(attempt - 2, len(self.retry_delays_s) - 1)]


@dataclass(order=True)
class _Delivery:
    not_before: float
    seq: int
    function: str = field(compare=False)
    payload: bytes = field(compare=False, repr=False)
    request_id: str = field(compare=False)
    attempt: int = field(compare=False, default=1)
    kind: str = field(compare=False, default="start")
    first_kind: str = field(compare=False, default="start")


class LocalLambda(StartStop):
    """The emulator. Use as a context manager (or :meth:`start` / :meth:`stop`)::

        with LocalLambda(workdir="/tmp/x") as emu:
            fn = emu.deploy("examples/emulator/app.py:handler", timeout_s=5, max_hops=3)
            run_id = emu.invoke(fn, {"records": 2000})
            report = emu.wait(timeout=120)
            print(report.run(run_id).status)

    ``workdir`` holds the default checkpoint directory and nothing else (a temporary
    directory by default); ``moto`` shares a :class:`MotoServer` (default: one of its own,
    started on first need); ``seed`` seeds duplicate deliveries; ``on_record`` is called with
    every finished :class:`InvocationRecord` (on emulator threads); ``log`` receives the
    platform's log lines (``START``/``END``/``REPORT``, ``Task timed out ...``) and, with
    ``echo_logs``, the functions' own output.
    """

    def __init__(
        self,
        *,
        workdir: str | os.PathLike[str] | None = None,
        moto: MotoServer | str | None = None,
        seed: int | None = None,
        on_record: Callable[[InvocationRecord], None] | None = None,
        log: Callable[[str], None] | None = None,
        echo_logs: bool = False,
        init_timeout_s: float = INIT_TIMEOUT_S,
        fargate_timeout_s: float = 600.0,
        fargate_stop_s: float = float(_FARGATE_STOP_S),
        poll_s: float = 0.1,
    ) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="longrun-local-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.moto = moto if isinstance(moto, MotoServer) else MotoServer(moto)
        self._owns_moto = not isinstance(moto, MotoServer)
        self.rng = random.Random(seed)
        self.on_record = on_record
        self.log = log or (lambda line: None)
        self.echo_logs = echo_logs
        self.init_timeout_s = init_timeout_s
        self.fargate_timeout_s = fargate_timeout_s
        self.fargate_stop_s = fargate_stop_s
        self.poll_s = poll_s
        self.functions: dict[str, LocalFunction] = {}
        self.records: list[InvocationRecord] = []
        self.dead_letters: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._index = itertools.count()
        self._active: dict[int, subprocess.Popen[str]] = {}
        self._active_invocations = 0
        self._tasks: dict[str, TaskProcess] = {}
        self._running_tasks = 0
        self._gen = 0
        self._clean_poll_gen = -1
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._endpoint: InvokeEndpoint | None = None
        self._ecs: dict[str, Any] | None = None
        self._launcher: EcsLauncher | None = None
        self._task_function: dict[str, str] = {}
        self._run_ids: dict[str, str] = {}
        self.t0_ms = _now_ms()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalLambda:
        self._endpoint = InvokeEndpoint(
            on_event=self._on_event,
            on_invoke=self._on_invoke,
            functions=set(),
            region=REGION,
            account=ACCOUNT,
        ).start()
        self._spawn(self._dispatch_loop, "emulator-dispatch")
        return self

    def stop(self) -> None:
        """Kill every process still running and stop every server this emulator started."""
        with self._cond:
            self._stopping = True
            active = list(self._active.values())
            self._cond.notify_all()
        for process in active:
            _killpg(process)
        if self._launcher is not None:
            with contextlib.suppress(Exception):
                self._launcher.close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._endpoint is not None:
            self._endpoint.stop()
        if self._owns_moto:
            self.moto.stop()

    @property
    def endpoint(self) -> InvokeEndpoint:
        if self._endpoint is None:
            raise RuntimeError("the emulator is not started; use it in a with block")
        return self._endpoint

    @property
    def tasks(self) -> list[TaskProcess]:
        """Every Fargate task process started so far, in order."""
        return [] if self._launcher is None else list(self._launcher.processes)

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _changed(self) -> None:
        """Something happened: a settled check must look again (call with the lock held)."""
        self._gen += 1
        self._cond.notify_all()

    # -- deploying ----------------------------------------------------------------------------

    def deploy(
        self,
        handler: str,
        *,
        name: str | None = None,
        timeout_s: float = 3.0,
        memory_mb: int = 128,
        env: Mapping[str, str] | None = None,
        store: str | None = None,
        max_hops: int | None = None,
        retries: int = 2,
        retry_delays_s: Sequence[float] = DEFAULT_RETRY_DELAYS_S,
        duplicate_rate: float = 0.0,
        duplicate_delay_s: float | None = None,
        escalate: bool = True,
        on_failure: str | bool | None = None,
        kill_after: KillAfter | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
    ) -> LocalFunction:
        """Deploy ``handler`` (``path/app.py:fn``, ``pkg.mod:fn`` or ``pkg.mod.fn``).

        ``store``: ``None``/``"file"`` for a directory under ``workdir``, ``file:///path``,
        ``"s3"`` for a fresh bucket in moto, or ``s3://bucket/prefix/`` (created in moto).
        ``escalate``: give the function a Fargate target (``LONGRUN_FARGATE_*``) in moto.
        ``on_failure``: the on-failure destination: ``None`` (default) is the safety net when
        ``escalate`` is on, else none; ``False`` none; a function name to send records to.
        ``max_hops`` sets ``LONGRUN_MAX_HOPS``. ``env`` is set last (a decorator argument
        still beats a ``LONGRUN_*`` variable: take the store from the environment so that
        the emulator reads the checkpoints the function writes).
        """
        code_dir, module_handler = parse_handler(handler, cwd)
        name = name or _function_name(module_handler)
        if name in self.functions:
            raise LongrunError(f"a function named {name!r} is already deployed")
        if timeout_s <= 0 or not 0.0 <= duplicate_rate <= 1.0 or retries < 0:
            raise LongrunError("timeout_s must be > 0, duplicate_rate in [0, 1], retries >= 0")
        store_uri, reader = self._store(store, name)
        function = LocalFunction(
            name=name,
            handler=module_handler,
            code_dir=code_dir,
            timeout_s=float(timeout_s),
            memory_mb=int(memory_mb),
            env=dict(env or {}),
            retries=retries,
            retry_delays_s=tuple(float(d) for d in retry_delays_s),
            duplicate_rate=float(duplicate_rate),
            duplicate_delay_s=float(timeout_s if duplicate_delay_s is None else duplicate_delay_s),
            on_failure=None,
            store_uri=store_uri,
            store=reader,
            max_hops=max_hops,
            escalate=escalate,
            kill_after=kill_after,
            pythonpath=tuple(os.fspath(p) for p in pythonpath),
        )
        if escalate:
            function.task_definition = self._register_task_definition(function)
        self._add(function)
        if on_failure is None and escalate:
            on_failure = True
        if on_failure is True:
            function.on_failure = self._deploy_safety_net(function).name
        elif isinstance(on_failure, str):
            function.on_failure = on_failure
        return function

    def _add(self, function: LocalFunction) -> None:
        with self._cond:
            self.functions[function.name] = function
        self.endpoint.functions = frozenset(self.functions)
        if function.handler != SAFETY_NET_HANDLER:
            # GetFunction, for the runner's function mode (the safety net runs an undecorated
            # function's failed event that way): the code directory as the deployment package.
            package = _zip_code(function.code_dir)
            if package is not None:
                self.endpoint.add_function(
                    function.name,
                    handler=function.handler,
                    zip_bytes=package,
                    environment=self._config_env(function),
                )

    def _deploy_safety_net(self, protected: LocalFunction) -> LocalFunction:
        name = f"{protected.name}-safety-net"
        if name in self.functions:
            return self.functions[name]
        env = {k: v for k, v in protected.env.items() if k.startswith(("LONGRUN_", "AWS_"))}
        net = LocalFunction(
            name=name,
            handler=SAFETY_NET_HANDLER,
            code_dir=_LONGRUN_ROOT,
            timeout_s=30.0,
            memory_mb=128,
            env=env,
            retries=protected.retries,
            retry_delays_s=protected.retry_delays_s,
            duplicate_rate=0.0,
            duplicate_delay_s=0.0,
            on_failure=None,
            store_uri=protected.store_uri,
            store=protected.store,
            max_hops=None,
            escalate=True,
            task_definition=protected.task_definition,
        )
        self._add(net)
        return net

    def _store(self, store: str | None, name: str) -> tuple[str, CheckpointStore]:
        from ..stores.file import FileStore
        from ..stores.s3 import S3Store

        if store in (None, "file"):
            path = self.workdir / "checkpoints"
            return path.as_uri() + "/", FileStore(path)
        assert store is not None
        if store.startswith("file://"):
            path = Path(urllib.request.url2pathname(store[len("file://") :]))
            return store, FileStore(path)
        if store == "s3":
            store = f"s3://longrun-local-{uuid.uuid4().hex[:12]}/runs/"
        if store.startswith("s3://"):
            bucket, _, prefix = store[len("s3://") :].partition("/")
            if not bucket:
                raise LongrunError(f"store {store!r} names no bucket: use s3://BUCKET/PREFIX/")
            client = self.moto.client("s3")
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=bucket)
            return store, S3Store(bucket, prefix=prefix, client=client)
        raise LongrunError(
            f"store {store!r}: use 'file', file:///PATH, 's3' or s3://BUCKET/PREFIX/"
        )

    # -- Fargate in moto ----------------------------------------------------------------------

    def _ecs_setup(self) -> dict[str, Any]:
        with self._cond:
            if self._ecs is not None:
                return self._ecs
        ec2, ecs = self.moto.client("ec2"), self.moto.client("ecs")
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
            self.moto.url,
            region=REGION,
            pythonpath=[_LONGRUN_ROOT],
            extra={"AWS_ENDPOINT_URL_LAMBDA": self.endpoint.url},
        )
        launcher = EcsLauncher(ecs, cluster, base_env=base)
        setup = {"cluster": cluster, "subnet": subnet, "security_group": group, "client": ecs}
        with self._cond:
            if self._ecs is None:
                self._ecs, self._launcher = setup, launcher
                self._spawn(self._fargate_loop, "emulator-fargate")
            return self._ecs

    def _fargate_env(self) -> dict[str, str]:
        ecs = self._ecs_setup()
        return {
            "LONGRUN_FARGATE_CLUSTER": ecs["cluster"],
            "LONGRUN_FARGATE_CONTAINER": CONTAINER,
            "LONGRUN_FARGATE_SUBNETS": ecs["subnet"],
            "LONGRUN_FARGATE_SECURITY_GROUPS": ecs["security_group"],
            "LONGRUN_FARGATE_STOP_S": f"{self.fargate_stop_s:g}",
        }

    def _register_task_definition(self, function: LocalFunction) -> str:
        ecs = self._ecs_setup()
        family = f"{function.name}-fargate"
        # The image's configuration: the function's LONGRUN_* and own variables, its code on
        # PYTHONPATH, and the handler for the runner's image mode.
        environment = {
            **self._config_env(function),
            "PYTHONPATH": os.pathsep.join(self._pythonpath(function)),
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
        with self._cond:
            self._task_function[arn] = function.name
        return family

    def _fargate_loop(self) -> None:
        launcher = self._launcher
        assert launcher is not None
        while True:
            with self._cond:
                if self._stopping:
                    return
                gen = self._gen
            try:
                pending = launcher.pending()
            except Exception as exc:  # moto hiccup: try again
                self.log(f"emulator: listing ECS tasks failed: {exc}")
                pending = []
            for spec in pending:
                self._start_task(launcher, spec)
            with self._cond:
                if not pending:
                    self._clean_poll_gen = gen
                    self._cond.notify_all()
                self._cond.wait(self.poll_s)

    def _start_task(self, launcher: EcsLauncher, spec: TaskSpec) -> None:
        with self._cond:
            function_name = self._task_function.get(spec.task_definition_arn)
            self._running_tasks += 1
            self._changed()
        function = self.functions.get(function_name or "")
        cwd = function.code_dir if function is not None else None
        started_ms = _now_ms()
        try:
            process = launcher.launch(spec, cwd=cwd)
        except Exception as exc:
            self.log(f"emulator: cannot run task {spec.task_arn}: {exc}")
            with self._cond:
                self._running_tasks -= 1
                self._changed()
            return
        self._spawn(self._watch_task, f"task-{spec.task_id[:8]}", process, function, started_ms)

    def _watch_task(
        self, process: TaskProcess, function: LocalFunction | None, started_ms: int
    ) -> None:
        spec = process.spec
        env = spec.environment
        run_id = env.get("LONGRUN_RUN_ID")
        record = InvocationRecord(
            index=next(self._index),
            kind="fargate",
            function=function.name if function else "?",
            where="fargate",
            request_id=f"fargate-{spec.ecs_task_id}",
            attempt=1,
            run_id=run_id,
            hop=_int_or_none(env.get("LONGRUN_HOP")),
            started_ms=started_ms,
            start_s=(started_ms - self.t0_ms) / 1000.0,
            pid=process.pid,
            task_arn=spec.task_arn,
        )
        self.log(f"emulator: Fargate task {spec.task_id} started (run {run_id} hop {record.hop})")
        try:
            code = process.wait(timeout=self.fargate_timeout_s)
        except TimeoutError:
            code = process.returncode if process.returncode is not None else -9
            record.reason = f"no exit within {self.fargate_timeout_s:g} s"
        record.ended_ms = _now_ms()
        record.duration_s = (record.ended_ms - started_ms) / 1000.0
        record.log = process.stdout + process.stderr
        summary = process.summary() or {}
        if code < 0:
            record.outcome, record.reason = "killed", record.reason or f"signal {-code}"
        elif summary.get("longrun_runner") == "done":
            status = (summary.get("longrun") or {}).get("status")
            if status is None:
                record.outcome, record.response = "completed", summary.get("result")
            else:
                record.outcome, record.response = str(status), summary.get("longrun")
                if status == "continued":
                    record.reason = "replacement task" + (
                        " after SIGTERM" if summary.get("stopping") else ""
                    )
        else:
            record.outcome = "error"
            record.error_message = str(summary.get("error") or f"exit status {code}")
        if function is not None and function.store is not None and run_id:
            self._read_checkpoint(function, record, run_id)
        self._finish(record)
        with self._cond:
            self._running_tasks -= 1
            self._changed()

    # -- invoking -----------------------------------------------------------------------------

    def invoke(
        self,
        function: LocalFunction | str,
        event: Any,
        *,
        sync: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Invoke through the Invoke API as a client would.

        Async (``Event``, the default): returns the request id, which is also the run id
        of a ``@longrun`` handler's new run (unless it has ``run_id=``). Sync
        (``RequestResponse``): returns the decoded response, or raises
        :class:`FunctionError`. An API error (payload too large, ...) raises
        :class:`LongrunError` with Lambda's error code.
        """
        name = function.name if isinstance(function, LocalFunction) else function
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        request = urllib.request.Request(
            f"{self.endpoint.url}/2015-03-31/functions/{name}/invocations",
            data=payload,
            method="POST",
            headers={
                "X-Amz-Invocation-Type": "RequestResponse" if sync else "Event",
                "Content-Type": "application/json",
            },
        )
        wait = timeout or (self.functions[name].timeout_s + self.init_timeout_s + 30)
        try:
            with urllib.request.urlopen(request, timeout=wait) as reply:
                body = reply.read()
                request_id = reply.headers.get("x-amzn-RequestId", "")
                function_error = reply.headers.get("X-Amz-Function-Error")
        except urllib.error.HTTPError as exc:
            code = exc.headers.get("x-amzn-ErrorType", str(exc.code))
            detail = exc.read().decode("utf-8", "replace")
            raise LongrunError(f"Invoke {name}: {code}: {detail}") from None
        if not sync:
            return request_id
        document = json.loads(body) if body else None
        if function_error:
            raise FunctionError(document if isinstance(document, dict) else {})
        return document

    def _on_event(self, request: InvokeRequest) -> None:
        function = self.functions[request.function_name]
        kind = "hop" if _envelope(request.payload) is not None else "start"
        self._enqueue(
            _Delivery(
                time.monotonic(),
                next(self._seq),
                function.name,
                request.payload,
                request.request_id,
                1,
                kind,
                kind,
            )
        )
        with self._cond:
            duplicate = function.duplicate_rate > 0 and self.rng.random() < function.duplicate_rate
            delay = self.rng.uniform(0.0, function.duplicate_delay_s) if duplicate else 0.0
        if duplicate:
            self._enqueue(
                _Delivery(
                    time.monotonic() + delay,
                    next(self._seq),
                    function.name,
                    request.payload,
                    request.request_id,
                    1,
                    "duplicate",
                    "duplicate",
                )
            )

    def _on_invoke(self, request: InvokeRequest) -> Any:
        function = self.functions[request.function_name]
        delivery = _Delivery(
            time.monotonic(),
            next(self._seq),
            function.name,
            request.payload,
            request.request_id,
            1,
            "sync",
            "sync",
        )
        with self._cond:
            self._active_invocations += 1
            self._changed()
        try:
            record, invocation = self._execute(delivery)
        finally:
            with self._cond:
                self._active_invocations -= 1
                self._changed()
        if invocation is not None and invocation.outcome == "response":
            return invocation.response or b"null"
        raise _function_error(record)

    def _enqueue(self, delivery: _Delivery) -> None:
        with self._cond:
            heapq.heappush(self._queue, delivery)
            self._changed()

    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    if self._queue and self._queue[0].not_before <= now:
                        delivery = heapq.heappop(self._queue)
                        self._active_invocations += 1
                        self._changed()
                        break
                    wait = self._queue[0].not_before - now if self._queue else 1.0
                    self._cond.wait(max(0.001, min(wait, 1.0)))
            self._spawn(self._deliver, f"invoke-{delivery.request_id[:8]}", delivery)

    def _deliver(self, delivery: _Delivery) -> None:
        try:
            record, _ = self._execute(delivery)
            failed = record.outcome in ("error", "killed", "crashed")
            function = self.functions[delivery.function]
            if failed and not self._stopping:
                if delivery.attempt <= function.retries:
                    attempt = delivery.attempt + 1
                    self._enqueue(
                        _Delivery(
                            time.monotonic() + function.retry_delay(attempt),
                            next(self._seq),
                            delivery.function,
                            delivery.payload,
                            delivery.request_id,
                            attempt,
                            "retry",
                            delivery.first_kind,
                        )
                    )
                else:
                    self._failed_event(function, delivery, record)
        finally:
            with self._cond:
                self._active_invocations -= 1
                self._changed()

    def _failed_event(
        self, function: LocalFunction, delivery: _Delivery, record: InvocationRecord
    ) -> None:
        """Retries exhausted: a Lambda destination record for the on-failure target."""
        try:
            payload: Any = json.loads(delivery.payload) if delivery.payload else None
        except ValueError:
            payload = delivery.payload.decode("utf-8", "replace")
        error = {
            "errorType": record.error_type or "Runtime.Unknown",
            "errorMessage": record.error_message or record.outcome,
        }
        destination = {
            "version": "1.0",
            "timestamp": _iso(_now_ms()),
            "requestContext": {
                "requestId": delivery.request_id,
                "functionArn": f"{function.arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": delivery.attempt,
            },
            "requestPayload": payload,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": error,
        }
        target = function.on_failure
        self.log(
            f"emulator: {function.name} request {delivery.request_id} failed "
            f"{delivery.attempt} time(s) ({error['errorType']}); "
            + (f"on-failure destination {target}" if target else "dropped (no destination)")
        )
        if target is None or target not in self.functions:
            with self._cond:
                self.dead_letters.append(destination)
            return
        self._enqueue(
            _Delivery(
                time.monotonic(),
                next(self._seq),
                target,
                json.dumps(destination).encode(),
                str(uuid.uuid4()),
                1,
                "safety-net",
                "safety-net",
            )
        )

    # -- one invocation -----------------------------------------------------------------------

    def _environment(self, function: LocalFunction, runtime_api: str) -> dict[str, str]:
        env = self._function_env(function)
        now = datetime.now(tz=timezone.utc)
        env.update(
            AWS_LAMBDA_RUNTIME_API=runtime_api,
            AWS_LAMBDA_LOG_STREAM_NAME=f"{now:%Y/%m/%d}/[$LATEST]{secrets.token_hex(16)}",
        )
        env.pop("AWS_LAMBDA_MAX_CONCURRENCY", None)  # would switch awslambdaric to LMI mode
        return env

    def _config_env(self, function: LocalFunction) -> dict[str, str]:
        """The function's configuration: ``LONGRUN_*`` and its own variables (what a task
        definition for the same code would carry too)."""
        env: dict[str, str] = {}
        if function.store_uri:
            env["LONGRUN_CHECKPOINT_URI"] = function.store_uri
        if function.max_hops is not None:
            env["LONGRUN_MAX_HOPS"] = str(function.max_hops)
        if function.escalate:
            env.update(self._fargate_env())
            if function.task_definition:
                env["LONGRUN_FARGATE_TASK_DEFINITION"] = function.task_definition
        env.update(function.env)
        return env

    def _pythonpath(self, function: LocalFunction) -> list[str]:
        return [str(function.code_dir), *function.pythonpath, str(_LONGRUN_ROOT)]

    def _function_env(self, function: LocalFunction) -> dict[str, str]:
        """What Lambda sets for a function, then its configuration (:meth:`_config_env`)."""
        env = base_environment(
            self.moto.url if (self.moto.started or function.escalate) else None,
            region=REGION,
            pythonpath=self._pythonpath(function),
        )
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        env.update(
            AWS_LAMBDA_FUNCTION_NAME=function.name,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(function.memory_mb),
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{function.name}",
            AWS_LAMBDA_INITIALIZATION_TYPE="on-demand",
            AWS_EXECUTION_ENV=f"AWS_Lambda_python{version}",
            AWS_ENDPOINT_URL_LAMBDA=self.endpoint.url,
            LAMBDA_TASK_ROOT=str(function.code_dir),
            _HANDLER=function.handler,
            TZ=":UTC",
        )
        env.update(self._config_env(function))
        return env

    def _execute(self, delivery: _Delivery) -> tuple[InvocationRecord, RuntimeInvocation]:
        function = self.functions[delivery.function]
        envelope = _envelope(delivery.payload)
        record = InvocationRecord(
            index=next(self._index),
            kind=delivery.kind,
            function=function.name,
            where="lambda",
            request_id=delivery.request_id,
            attempt=delivery.attempt,
            run_id=envelope[0] if envelope else _safety_net_run(delivery.payload),
            event_hop=envelope[1] if envelope else (0 if delivery.first_kind == "start" else None),
            payload=delivery.payload,
        )
        record.hop = record.event_hop
        with RuntimeApi() as api:
            spawned = time.monotonic()
            record.started_ms = _now_ms()
            record.start_s = (record.started_ms - self.t0_ms) / 1000.0
            process = subprocess.Popen(
                [sys.executable, "-m", "awslambdaric", function.handler],
                env=self._environment(function, api.address),
                cwd=function.code_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                start_new_session=True,  # its own process group: the kill reaches children
            )
            record.pid = process.pid
            with self._cond:
                self._active[process.pid] = process
            assert process.stdout is not None
            reader = threading.Thread(
                target=self._read_output,
                args=(process.stdout, record),
                name=f"out-{process.pid}",
                daemon=True,
            )
            reader.start()
            invocation = api.assign(
                delivery.request_id,
                delivery.payload,
                function_arn=function.arn,
                timeout_s=function.timeout_s,
            )
            try:
                self._supervise(function, api, invocation, process, record, spawned)
            finally:
                _killpg(process)
                reader.join(timeout=5)
                with self._cond:
                    self._active.pop(process.pid, None)
            init_error = api.init_error
        record.ended_ms = _now_ms()
        self._classify(function, record, invocation, init_error)
        self._finish(record)
        return record, invocation

    def _read_output(self, stream: IO[str], record: InvocationRecord) -> None:
        with stream:
            for raw in stream:
                line = raw.rstrip("\n").replace("\r", "\n  ")
                record.log.append(line)
                if self.echo_logs:
                    self.log(f"  {record.function} {record.request_id[:8]} | {line}")

    def _kill(self, process: subprocess.Popen[str], record: InvocationRecord) -> None:
        record.memory_mb = _max_rss_mb(process.pid)
        _killpg(process)
        record.killed_at_ms = _now_ms()

    def _supervise(
        self,
        function: LocalFunction,
        api: RuntimeApi,
        invocation: RuntimeInvocation,
        process: subprocess.Popen[str],
        record: InvocationRecord,
        spawned: float,
    ) -> None:
        """Wait for the answer; kill at the deadline (or an injected kill, or init timeout)."""
        init_deadline = spawned + self.init_timeout_s
        while not invocation.wait_delivered(0.01):
            if process.poll() is not None:
                record.exit_code = process.returncode
                return
            if api.init_error is not None or self._stopping:
                return
            if time.monotonic() > init_deadline:
                self._kill(process, record)
                record.outcome, record.reason = "killed", "init timeout"
                record.error_type = "Runtime.InitTimeout"
                record.error_message = (
                    f"Init phase timed out after {self.init_timeout_s:.2f} seconds"
                )
                return
        record.init_ms = round((time.monotonic() - spawned) * 1000, 1)
        assert invocation.delivered_ms is not None and invocation.deadline_ms is not None
        self.log(f"START RequestId: {invocation.request_id} Version: $LATEST")
        kill_at_ms: int | None = None
        if function.kill_after is not None:
            after = function.kill_after(record)
            if after is not None:
                kill_at_ms = invocation.delivered_ms + int(after * 1000)
        while True:
            now = _now_ms()
            if invocation.answered:
                record.memory_mb = _max_rss_mb(process.pid)
                break  # the environment would be frozen now; it is never reused here
            if process.poll() is not None:
                record.exit_code = process.returncode
                break
            if self._stopping:
                break
            if kill_at_ms is not None and now >= kill_at_ms:
                self._kill(process, record)
                record.outcome, record.reason = "killed", "SIGKILL injected"
                record.error_type = "Runtime.ExitError"
                record.error_message = (
                    f"RequestId: {invocation.request_id} Error: Runtime exited with error: "
                    "signal: killed"
                )
                break
            if now >= invocation.deadline_ms:
                self._kill(process, record)
                assert record.killed_at_ms is not None
                elapsed = (record.killed_at_ms - invocation.delivered_ms) / 1000.0
                message = f"Task timed out after {elapsed:.2f} seconds"
                self.log(f"{_iso(record.killed_at_ms)} {invocation.request_id} {message}")
                record.log.append(message)
                record.outcome, record.reason = "killed", "timeout"
                record.error_type = "Sandbox.Timedout"
                record.error_message = f"RequestId: {invocation.request_id} Error: {message}"
                break
            until = min(invocation.deadline_ms, kill_at_ms or invocation.deadline_ms)
            invocation.wait(max(0.001, min((until - now) / 1000.0, 0.05)))
        record.answered_ms = invocation.answered_ms
        end_ms = invocation.answered_ms or record.killed_at_ms or _now_ms()
        duration_ms = end_ms - invocation.delivered_ms
        record.duration_s = duration_ms / 1000.0
        self.log(f"END RequestId: {invocation.request_id}")
        self.log(
            f"REPORT RequestId: {invocation.request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, duration_ms)} ms\tMemory Size: {function.memory_mb} MB\t"
            f"Max Memory Used: {record.memory_mb or 0} MB\tInit Duration: {record.init_ms:.2f} ms"
        )

    def _classify(
        self,
        function: LocalFunction,
        record: InvocationRecord,
        invocation: RuntimeInvocation,
        init_error: Mapping[str, Any] | None,
    ) -> None:
        """Outcome, response and checkpoint facts of a finished Lambda invocation."""
        if record.outcome == "killed":
            pass
        elif invocation.outcome == "response":
            try:
                response = json.loads(invocation.response or b"null")
            except ValueError:
                response = (invocation.response or b"").decode("utf-8", "replace")
            record.response = response
            record.outcome, record.reason = _response_outcome(response)
        elif invocation.outcome == "error":
            error = invocation.error or {}
            record.outcome = "error"
            record.error_type = str(error.get("errorType") or invocation.error_type or "")
            record.error_message = str(error.get("errorMessage") or "")
        elif init_error is not None:
            record.outcome, record.reason = "error", "init error"
            record.error_type = str(init_error.get("errorType") or "Runtime.Unknown")
            record.error_message = str(init_error.get("errorMessage") or "")
        elif self._stopping:
            record.outcome, record.reason = "killed", "emulator stopped"
        else:
            code = record.exit_code
            record.outcome = "crashed"
            record.reason = "exited without answering" + ("" if record.init_ms else " (init)")
            record.error_type = "Runtime.ExitError"
            record.error_message = f"RequestId: {record.request_id} Error: Runtime exited" + (
                f" with error: exit status {code}" if code is not None else ""
            )
        if function.store is None:
            return
        run_id = record.run_id or self._find_run(function, record)
        if run_id:
            record.run_id = run_id
            self._read_checkpoint(function, record, run_id)

    def _find_run(self, function: LocalFunction, record: InvocationRecord) -> str | None:
        response = record.response
        if isinstance(response, dict) and isinstance(response.get("longrun"), dict):
            run_id = response["longrun"].get("run_id")
            if isinstance(run_id, str):
                return run_id
        with self._cond:
            if record.request_id in self._run_ids:
                return self._run_ids[record.request_id]
        assert function.store is not None
        try:
            if function.store.load(record.request_id) is not None:
                found: str | None = record.request_id
            else:
                found = None
                for run_id in function.store.list_runs():
                    loaded = function.store.load(run_id)
                    if loaded and loaded.document.get("origin_request_id") == record.request_id:
                        found = run_id
                        break
        except Exception:  # an invalid request id as run id, a store error: no run known
            return None
        if found:
            with self._cond:
                self._run_ids[record.request_id] = found
        return found

    def _read_checkpoint(
        self, function: LocalFunction, record: InvocationRecord, run_id: str
    ) -> None:
        assert function.store is not None
        try:
            loaded = function.store.load(run_id)
        except Exception as exc:
            record.log.append(f"emulator: cannot read the checkpoint of {run_id}: {exc}")
            return
        if loaded is None:
            return
        record.checkpoint_bytes = loaded.size
        record.checkpoint_status = str(loaded.document.get("status"))
        entry = _hop_entry(loaded, record)
        if entry is None:
            return
        record.hop = entry.get("hop")
        record.items = int(entry.get("items") or 0)
        ended = entry.get("ended_ms")
        if (
            entry.get("outcome") in ("continued", "escalated")
            and isinstance(ended, int)
            and record.answered_ms is not None
        ):
            record.send_ms = record.answered_ms - ended
        claim = loaded.document.get("claim") or {}
        if (
            record.outcome == "killed"
            and record.killed_at_ms is not None
            and entry.get("outcome") is None
            and claim.get("request_id") == record.request_id
        ):
            record.unsaved_ms = record.killed_at_ms - int(loaded.document["updated_ms"])

    def _finish(self, record: InvocationRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._changed()
        if self.on_record is not None:
            self.on_record(record)

    # -- waiting and reporting ----------------------------------------------------------------

    def settled(self) -> bool:
        """Nothing queued, nothing running, and a look at ECS found no task to start since."""
        with self._cond:
            return self._settled_locked()

    def _settled_locked(self) -> bool:
        idle = not self._queue and self._active_invocations == 0 and self._running_tasks == 0
        if not idle:
            return False
        return self._launcher is None or self._clean_poll_gen == self._gen

    def wait(self, timeout: float = 120.0) -> Report:
        """Block until the emulator has settled; returns the report.

        Raises :class:`TimeoutError` (with the report so far) if it has not within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._settled_locked():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
            settled = self._settled_locked()
        report = self.report()
        if not settled:
            raise TimeoutError(f"the emulator did not settle within {timeout} s\n{report.text()}")
        return report

    def report(self) -> Report:
        with self._cond:
            records = sorted(self.records, key=lambda r: (r.started_ms, r.index))
            dead = list(self.dead_letters)
        # An invocation killed before its claim left no checkpoint behind: it belongs to the
        # run that a later delivery of the same request (its retry) created.
        known = {r.request_id: r.run_id for r in records if r.run_id and r.kind != "fargate"}
        for record in records:
            if record.run_id is None and record.request_id in known:
                record.run_id = known[record.request_id]
        runs: list[RunSummary] = []
        seen: dict[str, str] = {}
        for record in records:
            if record.run_id and record.run_id not in seen and record.kind != "safety-net":
                seen[record.run_id] = record.function
        for run_id, function_name in seen.items():
            function = self.functions.get(function_name)
            if function is None or function.store is None:
                continue
            runs.append(self._summary(function, run_id, records))
        return Report(records, runs, dead, (_now_ms() - self.t0_ms) / 1000.0)

    def _summary(
        self, function: LocalFunction, run_id: str, records: list[InvocationRecord]
    ) -> RunSummary:
        assert function.store is not None
        try:
            loaded = function.store.load(run_id)
        except Exception:
            loaded = None
        doc = loaded.document if loaded else {}
        hops = list(doc.get("hops") or [])
        mine = [r for r in records if r.run_id == run_id]
        refused = sum(
            1
            for r in mine
            if r.outcome == "duplicate" or (r.outcome == "error" and r.error_type == "ClaimBusy")
        )
        return RunSummary(
            run_id=run_id,
            function=function.name,
            status=doc.get("status"),
            result=doc.get("result"),
            error=doc.get("error"),
            hops=hops,
            items=sum(int(h.get("items") or 0) for h in hops),
            lambda_hops=sum(1 for h in hops if h.get("where") == "lambda"),
            fargate_hops=sum(1 for h in hops if h.get("where") == "fargate"),
            invocations=sum(1 for r in mine if r.kind != "safety-net"),
            kills=sum(1 for r in mine if r.outcome == "killed"),
            retries=sum(1 for r in mine if r.kind == "retry"),
            duplicates_delivered=sum(1 for r in mine if r.kind == "duplicate"),
            duplicates_refused=refused,
            safety_net=sum(1 for r in mine if r.kind == "safety-net"),
            handoffs=handoffs(run_id, hops),
            checkpoint_bytes=loaded.size if loaded else None,
            started_ms=min((r.started_ms for r in mine), default=self.t0_ms),
            ended_ms=max((r.ended_ms for r in mine), default=self.t0_ms),
        )


def handoffs(run_id: str, hops: Sequence[Mapping[str, Any]]) -> list[Handoff]:
    """The hand-offs of a run, from its checkpoint's hop entries (see :class:`Handoff`)."""
    found: list[Handoff] = []
    for index, entry in enumerate(hops):
        if entry.get("outcome") not in ("continued", "escalated") or entry.get("ended_ms") is None:
            continue
        nxt = next((h for h in hops[index + 1 :] if h.get("hop") == entry.get("hop", -2) + 1), None)
        if nxt is None or nxt.get("started_ms") is None:
            continue
        found.append(
            Handoff(
                run_id=run_id,
                from_hop=int(entry["hop"]),
                to_hop=int(nxt["hop"]),
                via=str(nxt.get("where")),
                written_ms=int(entry["ended_ms"]),
                claimed_ms=int(nxt["started_ms"]),
            )
        )
    return found


# -- helpers ----------------------------------------------------------------------------------


def _function_name(handler: str) -> str:
    module = handler.rsplit(".", 1)[0].replace(".", "-").replace("_", "-")
    return f"{module}-local"[:64]


def _envelope(payload: bytes) -> tuple[str, int] | None:
    try:
        envelope = parse_envelope(json.loads(payload)) if payload else None
    except (ValueError, LongrunError):
        return None
    return None if envelope is None else (envelope.run_id, envelope.hop)


def _safety_net_run(payload: bytes) -> str | None:
    """The run a destination record is about (its envelope's, else its request id)."""
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(record, dict) or "requestContext" not in record:
        return None
    inner = _envelope(json.dumps(record.get("requestPayload")).encode())
    if inner is not None:
        return inner[0]
    request_id = (record.get("requestContext") or {}).get("requestId")
    return str(request_id) if request_id else None


def _response_outcome(response: Any) -> tuple[str, str | None]:
    if isinstance(response, dict) and set(response) == {"longrun"}:
        body = response["longrun"]
        if isinstance(body, dict):
            status = str(body.get("status"))
            if body.get("existing"):
                return "existing", f"run is {status}"
            if status == "continued":
                nxt = body.get("next")
                reason = "resent" if body.get("resent") else None
                return ("escalated" if nxt == "fargate" else "continued"), reason
            if status == "duplicate":
                return "duplicate", body.get("reason")
            return status, None
    if isinstance(response, dict) and isinstance(response.get("results"), list):
        actions = [str(r.get("action")) for r in response["results"] if isinstance(r, dict)]
        if actions:  # the safety net's answer
            return ",".join(actions), None
    return "completed", None


def _hop_entry(loaded: Loaded, record: InvocationRecord) -> dict[str, Any] | None:
    """The checkpoint's hop entry this invocation claimed (same request id, started during it)."""
    found = None
    for entry in loaded.document.get("hops") or []:
        started = entry.get("started_ms")
        if (
            entry.get("request_id") == record.request_id
            and isinstance(started, int)
            and record.started_ms - 5 <= started <= (record.ended_ms or _now_ms()) + 5
        ):
            found = entry
    return found


def _function_error(record: InvocationRecord) -> Exception:
    """An exception the Invoke endpoint turns into Lambda's function error document."""
    kind = record.error_type or "Runtime.Unknown"
    error_class: type[Exception] = type(kind, (Exception,), {})
    return error_class(record.error_message or record.outcome)


_SKIP_DIRS = {"__pycache__", "node_modules", "venv", "site-packages"}
_MAX_PACKAGE = 50 * 1024 * 1024


def _zip_code(root: Path) -> bytes | None:
    """``root`` as a deployment package (Python files and data, no caches or virtualenvs);
    ``None`` if it is larger than Lambda's 50 MB zip limit."""
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                path = Path(folder) / name
                if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                    continue
                total += path.stat().st_size
                if total > _MAX_PACKAGE:
                    return None
                archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def _int_or_none(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _killpg(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _max_rss_mb(pid: int) -> int:
    """The process's peak resident memory (Linux /proc), 0 if unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0
