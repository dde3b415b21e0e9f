"""The emulator itself: :class:`LocalLambda`, which puts its parts together.

Its parts share a :class:`~longrun.testing.emulator.core.Core` (settings, functions, records,
one lock) and each owns one concern: :class:`~.deployer.Deployer` (deploying),
:class:`~.fargate.FargateInMoto` (ECS in moto, task processes), :class:`~.invoker.Invoker`
(the Invoke API, queue, retries, on-failure), :class:`~.invocation.InvocationRunner` (one
invocation's process), :class:`~.checkpoints.CheckpointReader` (what a checkpoint says about
an invocation), :class:`~.environment.Environments` (a function's variables) and
:class:`~.reporter.Reporter` (waiting and reporting).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from ...ports import ENV_CLOCK_OFFSET_FILE
from .._http import StartStop
from ..ecs_launcher import TaskProcess
from ..invoke_endpoint import InvokeEndpoint
from .checkpoints import CheckpointReader
from .core import Core
from .deployer import Deployer
from .environment import Environments
from .fargate import FargateInMoto
from .functions import KillAfter, LocalFunction
from .helpers import DEFAULT_RETRY_DELAYS_S, FARGATE_STOP_S, INIT_TIMEOUT_S, killpg
from .invocation import InvocationRunner
from .invoker import Invoker
from .moto_server import MotoServer
from .records import InvocationRecord, Report
from .reporter import Reporter
from .scheduler import SchedulerFirer

_T = TypeVar("_T")


class _OnCore(Generic[_T]):
    """An attribute of :class:`LocalLambda` kept on its :class:`Core`, where the parts read it,
    so that setting it on the emulator (``emu.log = lines.append``) reaches them."""

    def __set_name__(self, owner: type[LocalLambda], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[LocalLambda] | None = None) -> _OnCore[_T]: ...

    @overload
    def __get__(self, obj: LocalLambda, owner: type[LocalLambda] | None = None) -> _T: ...

    def __get__(
        self, obj: LocalLambda | None, owner: type[LocalLambda] | None = None
    ) -> _OnCore[_T] | _T:
        if obj is None:
            return self
        value: _T = getattr(obj._core, self._name)
        return value

    def __set__(self, obj: LocalLambda, value: _T) -> None:
        setattr(obj._core, self._name, value)


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
    ``echo_logs``, the functions' own output. ``fast_waits``: when nothing runs and only
    wake-up schedules are pending, the emulated clock jumps to the earliest one, so a long
    ``run.sleep`` or a callback's timeout takes no real time (every process of the emulator
    reads that clock; pass :meth:`clock_env` to a CLI process); by default time is real.
    """

    workdir: _OnCore[Path] = _OnCore()
    moto: _OnCore[MotoServer] = _OnCore()
    rng: _OnCore[random.Random] = _OnCore()
    on_record: _OnCore[Callable[[InvocationRecord], None] | None] = _OnCore()
    log: _OnCore[Callable[[str], None]] = _OnCore()
    echo_logs: _OnCore[bool] = _OnCore()
    init_timeout_s: _OnCore[float] = _OnCore()
    fargate_timeout_s: _OnCore[float] = _OnCore()
    fargate_stop_s: _OnCore[float] = _OnCore()
    poll_s: _OnCore[float] = _OnCore()
    functions: _OnCore[dict[str, LocalFunction]] = _OnCore()
    records: _OnCore[list[InvocationRecord]] = _OnCore()
    dead_letters: _OnCore[list[dict[str, Any]]] = _OnCore()
    t0_ms: _OnCore[int] = _OnCore()

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
        fargate_stop_s: float = float(FARGATE_STOP_S),
        poll_s: float = 0.1,
        fast_waits: bool = False,
    ) -> None:
        path = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="longrun-local-"))
        path.mkdir(parents=True, exist_ok=True)
        self._owns_moto = not isinstance(moto, MotoServer)
        self._core = core = Core(
            workdir=path,
            moto=moto if isinstance(moto, MotoServer) else MotoServer(moto),
            rng=random.Random(seed),
            on_record=on_record,
            log=log or (lambda line: None),
            echo_logs=echo_logs,
            init_timeout_s=init_timeout_s,
            fargate_timeout_s=fargate_timeout_s,
            fargate_stop_s=fargate_stop_s,
            poll_s=poll_s,
            fast_waits=fast_waits,
        )
        checkpoints = CheckpointReader(core)
        self._fargate = FargateInMoto(core, checkpoints)
        environments = Environments(core, self._fargate)
        self._deployer = Deployer(core, self._fargate, environments)
        self._runner = InvocationRunner(core, environments, checkpoints)
        self._invoker = Invoker(core, self._runner)
        self._scheduler = SchedulerFirer(
            core, self._invoker, lambda: self._invoker.idle() and self._fargate.idle()
        )
        self._runner.on_answer = self._scheduler.note
        self._reporter = Reporter(core, self._invoker, self._fargate)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalLambda:
        self._invoker.start()
        self._core.spawn(self._scheduler.loop, "emulator-scheduler")
        return self

    def stop(self) -> None:
        """Kill every process still running and stop every server this emulator started."""
        core = self._core
        with core.cond:
            core.stopping = True
            active = self._runner.processes()
            core.cond.notify_all()
        for process in active:
            killpg(process)
        self._runner.close()
        self._fargate.close()
        if core.xray is not None:
            core.xray.close()
        for thread in core.threads:
            thread.join(timeout=5)
        if core.invoke_endpoint is not None:
            core.invoke_endpoint.stop()
        if self._owns_moto:
            core.moto.stop()

    @property
    def endpoint(self) -> InvokeEndpoint:
        return self._core.endpoint

    def now_ms(self) -> int:
        """The emulated wall clock (epoch ms): the real one, plus the waits skipped with
        ``fast_waits``."""
        return self._core.now_ms()

    def clock_env(self) -> dict[str, str]:
        """The environment a process started by a test needs to read the emulated clock
        (``longrun status``, ``longrun callback``): empty unless ``fast_waits``."""
        if not self._core.fast_waits:
            return {}
        return {ENV_CLOCK_OFFSET_FILE: str(self._core.clock_file)}

    @property
    def tasks(self) -> list[TaskProcess]:
        """Every Fargate task process started so far, in order."""
        return self._fargate.tasks

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
        tracing: bool = False,
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
        ``tracing``: active tracing, as the function setting: each invocation gets a sampled
        X-Ray trace header, and what the function sends to its X-Ray daemon is kept
        (:meth:`traces`).
        """
        return self._deployer.deploy(
            handler,
            name=name,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            env=env,
            store=store,
            max_hops=max_hops,
            retries=retries,
            retry_delays_s=retry_delays_s,
            duplicate_rate=duplicate_rate,
            duplicate_delay_s=duplicate_delay_s,
            escalate=escalate,
            on_failure=on_failure,
            kill_after=kill_after,
            cwd=cwd,
            pythonpath=pythonpath,
            tracing=tracing,
        )

    def traces(self) -> list[dict[str, Any]]:
        """The X-Ray segment documents functions with ``tracing`` sent, in arrival order."""
        xray = self._core.xray
        return [] if xray is None else xray.documents()

    # -- invoking -----------------------------------------------------------------------------

    def invoke(
        self,
        function: LocalFunction | str,
        event: Any,
        *,
        sync: bool = False,
        timeout: float | None = None,
        tenant_id: str | None = None,
    ) -> Any:
        """Invoke through the Invoke API as a client would (``tenant_id``: as a tenant of a
        function in per-tenant isolation mode, ``X-Amz-Tenant-Id``).

        Async (``Event``, the default): returns the request id, which is also the run id
        of a ``@longrun`` handler's new run (unless it has ``run_id=``). Sync
        (``RequestResponse``): returns the decoded response, or raises
        :class:`FunctionError`. An API error (payload too large, ...) raises
        :class:`LongrunError` with Lambda's error code.
        """
        return self._invoker.invoke(
            function, event, sync=sync, timeout=timeout, tenant_id=tenant_id
        )

    # -- waiting and reporting ----------------------------------------------------------------

    def settled(self) -> bool:
        """Nothing queued, nothing running, and a look at ECS found no task to start since."""
        return self._reporter.settled()

    def wait(self, timeout: float = 120.0) -> Report:
        """Block until the emulator has settled; returns the report.

        Raises :class:`TimeoutError` (with the report so far) if it has not within ``timeout``.
        """
        return self._reporter.wait(timeout)

    def report(self) -> Report:
        """Everything recorded so far: one :class:`InvocationRecord` per invocation and per
        task, and a :class:`RunSummary` per run."""
        return self._reporter.report()
