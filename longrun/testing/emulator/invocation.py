"""One invocation, in an execution environment: an ``awslambdaric`` process with a Runtime API
of its own, supervised to its deadline (or an injected kill), then classified from its answer
and its checkpoint.

As Lambda does, an environment that answered is kept warm for the function's next invocation
(module state and all: init runs once), and one that was killed or crashed is thrown away. A
new environment is a cold start (``InvocationRecord.cold``)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ...protocol import Answer, Status
from ..delivery import Delivery
from ..runtime_api import RuntimeApi, RuntimeInvocation, trace_id
from .checkpoints import CheckpointReader
from .core import Core
from .environment import Environments
from .functions import LocalFunction
from .helpers import envelope_of, iso, killpg, now_ms, safety_net_run
from .records import InvocationRecord


class _Environment:
    """One execution environment: a runtime process and its Runtime API."""

    def __init__(self, api: RuntimeApi, process: subprocess.Popen[bytes], spawned: float) -> None:
        self.api = api
        self.process = process
        self.spawned = spawned
        self.record: InvocationRecord | None = None
        """The invocation running in it now: its output lines go to this record."""
        assert process.stdout is not None
        self._fd = process.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._lock = threading.Lock()
        self._carry = b""
        self._eof = threading.Event()
        self.echo: Any = None
        """Where each line is echoed too (``echo(record, line)``), if anywhere."""

    def alive(self) -> bool:
        return self.process.poll() is None

    def read_output(self) -> None:
        """The reader thread: hand the process's output to its invocations until it ends."""
        while not self._eof.is_set():
            select.select([self._fd], [], [], 0.5)
            with self._lock:
                self._pump()

    def settle(self) -> None:
        """Give the invocation everything its process printed before it answered, then
        leave the environment without one. The runtime's output is unbuffered
        (``PYTHONUNBUFFERED``), so what it wrote before posting its answer is in the pipe:
        read here under the reader's lock, it cannot reach the next invocation's record."""
        with self._lock:
            self._pump()
            self._line(self._carry)
            self._carry = b""
            self.record = None

    def drain(self, timeout_s: float = 5.0) -> None:
        """After a kill: wait for the end of the output (every line to its invocation)."""
        self._eof.wait(timeout_s)

    def _pump(self) -> None:
        """Read what the pipe holds now (call with the lock held)."""
        while not self._eof.is_set():
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._line(self._carry)
                self._carry = b""
                self._eof.set()
                return
            *lines, self._carry = (self._carry + chunk).split(b"\n")
            for line in lines:
                self._line(line)

    def _line(self, raw: bytes) -> None:
        record = self.record
        if not raw or record is None:  # nothing, or between invocations (idle output)
            return
        line = raw.decode("utf-8", "replace").replace("\r", "\n  ")
        record.log.append(line)
        if self.echo is not None:
            self.echo(record, line)


class InvocationRunner:
    """Runs one delivery as one Lambda invocation (:meth:`execute`) and records it."""

    def __init__(
        self, core: Core, environments: Environments, checkpoints: CheckpointReader
    ) -> None:
        self._core = core
        self._environments = environments
        self._checkpoints = checkpoints
        self._active: dict[int, subprocess.Popen[bytes]] = {}
        """The runtime processes alive now (busy or warm), by pid."""
        self._warm: dict[str, list[_Environment]] = {}
        """Idle environments that answered their last invocation, by function."""
        self.on_answer: Callable[[Any], None] | None = None
        """Told every answer a function gave (with the lock held): the wake-ups it made."""

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The runtime processes running now (call with the lock held)."""
        return list(self._active.values())

    def execute(self, delivery: Delivery) -> tuple[InvocationRecord, RuntimeInvocation]:
        """Run ``delivery`` in a new runtime process; returns its record (already recorded)
        and the Runtime API's side of the invocation."""
        function = self._core.functions[delivery.function]
        envelope = envelope_of(delivery.event)
        record = InvocationRecord(
            index=next(self._core.index),
            kind=delivery.kind,
            function=function.name,
            where="lambda",
            request_id=delivery.request_id,
            attempt=delivery.attempt,
            run_id=envelope[0] if envelope else safety_net_run(delivery.event),
            event_hop=envelope[1] if envelope else (0 if delivery.first_kind == "start" else None),
            payload=delivery.event,
        )
        record.hop = record.event_hop
        env = self._take_warm(function)
        record.cold = env is None
        if env is None:
            env = self._spawn(function)
        env.record = record
        record.pid = env.process.pid
        record.started_ms = now_ms()
        record.start_s = (record.started_ms - self._core.t0_ms) / 1000.0
        api, process = env.api, env.process
        invocation = api.assign(
            delivery.request_id,
            delivery.event,
            function_arn=function.arn,
            timeout_s=function.timeout_s,
            tenant_id=delivery.tenant_id,
            trace=trace_id(sampled=function.tracing),
        )
        keep = False
        try:
            self._supervise(function, api, invocation, process, record, env.spawned)
            # Lambda keeps an environment that answered (a result or a handled error); one
            # that was killed, crashed or broke the platform's limits is replaced.
            platform_error = (invocation.error_type or "").startswith(("Function.", "Runtime."))
            keep = (
                invocation.answered
                and record.outcome != "killed"
                and not platform_error
                and env.alive()
                and not self._core.stopping
            )
        finally:
            init_error = api.init_error
            if keep:
                self._park(function, env)
            else:
                self._discard(env)
        record.ended_ms = now_ms()
        self._classify(function, record, invocation, init_error)
        self._core.finish(record)
        return record, invocation

    def _spawn(self, function: LocalFunction) -> _Environment:
        """A new execution environment (a cold start): its Runtime API, then its process."""
        api = RuntimeApi().start()
        spawned = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", function.handler],
            env=self._environments.invocation_env(function, api.address),
            cwd=function.code_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches children
        )
        env = _Environment(api, process, spawned)
        env.echo = self._echo
        with self._core.cond:
            self._active[process.pid] = process
        threading.Thread(
            target=env.read_output,
            name=f"out-{process.pid}",
            daemon=True,
        ).start()
        return env

    def _take_warm(self, function: LocalFunction) -> _Environment | None:
        """An idle environment of ``function`` that is still alive, if any (a warm start)."""
        with self._core.cond:
            idle = self._warm.get(function.name) or []
            while idle:
                env = idle.pop()
                if env.alive():
                    return env
                self._active.pop(env.process.pid, None)
                env.api.stop()
        return None

    def _park(self, function: LocalFunction, env: _Environment) -> None:
        """Keep ``env`` for the function's next invocation (its runtime waits on ``next``)."""
        env.settle()
        with self._core.cond:
            if not self._core.stopping:
                self._warm.setdefault(function.name, []).append(env)
                return
        self._discard(env)

    def _discard(self, env: _Environment) -> None:
        killpg(env.process)
        env.drain()  # what it printed before it died still goes to its invocation
        env.api.stop()
        with self._core.cond:
            self._active.pop(env.process.pid, None)

    def close(self) -> None:
        """Throw every warm environment away (the emulator stops)."""
        with self._core.cond:
            envs = [env for idle in self._warm.values() for env in idle]
            self._warm.clear()
        for env in envs:
            self._discard(env)

    def _echo(self, record: InvocationRecord, line: str) -> None:
        if self._core.echo_logs:
            self._core.log(f"  {record.function} {record.request_id[:8]} | {line}")

    def _kill(self, process: subprocess.Popen[bytes], record: InvocationRecord) -> None:
        record.memory_mb = _max_rss_mb(process.pid)
        killpg(process)
        record.killed_at_ms = now_ms()

    def _supervise(
        self,
        function: LocalFunction,
        api: RuntimeApi,
        invocation: RuntimeInvocation,
        process: subprocess.Popen[bytes],
        record: InvocationRecord,
        spawned: float,
    ) -> None:
        """Wait for the answer; kill at the deadline (or an injected kill, or init timeout)."""
        # A warm environment's runtime is already waiting on ``next``: no init phase.
        init_deadline = (spawned if record.cold else time.monotonic()) + self._core.init_timeout_s
        while not invocation.wait_delivered(0.01):
            if process.poll() is not None:
                record.exit_code = process.returncode
                return
            if api.init_error is not None or self._core.stopping:
                return
            if time.monotonic() > init_deadline:
                self._kill(process, record)
                record.outcome, record.reason = "killed", "init timeout"
                record.error_type = "Runtime.InitTimeout"
                record.error_message = (
                    f"Init phase timed out after {self._core.init_timeout_s:.2f} seconds"
                )
                return
        if record.cold:
            record.init_ms = round((time.monotonic() - spawned) * 1000, 1)
        assert invocation.delivered_ms is not None and invocation.deadline_ms is not None
        self._core.log(f"START RequestId: {invocation.request_id} Version: $LATEST")
        kill_at_ms: int | None = None
        if function.kill_after is not None:
            after = function.kill_after(record)
            if after is not None:
                kill_at_ms = invocation.delivered_ms + int(after * 1000)
        while True:
            now = now_ms()
            if invocation.answered:
                record.memory_mb = _max_rss_mb(process.pid)
                break  # the environment is frozen now, and kept warm for the next one
            if process.poll() is not None:
                record.exit_code = process.returncode
                break
            if self._core.stopping:
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
                self._core.log(f"{iso(record.killed_at_ms)} {invocation.request_id} {message}")
                record.log.append(message)
                record.outcome, record.reason = "killed", "timeout"
                record.error_type = "Sandbox.Timedout"
                record.error_message = f"RequestId: {invocation.request_id} Error: {message}"
                break
            until = min(invocation.deadline_ms, kill_at_ms or invocation.deadline_ms)
            invocation.wait(max(0.001, min((until - now) / 1000.0, 0.05)))
        record.answered_ms = invocation.answered_ms
        end_ms = invocation.answered_ms or record.killed_at_ms or now_ms()
        duration_ms = end_ms - invocation.delivered_ms
        record.duration_s = duration_ms / 1000.0
        self._core.log(f"END RequestId: {invocation.request_id}")
        self._core.log(
            f"REPORT RequestId: {invocation.request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, duration_ms)} ms\tMemory Size: {function.memory_mb} MB\t"
            f"Max Memory Used: {record.memory_mb or 0} MB"
            + (f"\tInit Duration: {record.init_ms:.2f} ms" if record.init_ms is not None else "")
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
            if self.on_answer is not None:
                with self._core.cond:
                    self.on_answer(response)
        elif invocation.outcome == "error":
            error = invocation.error or {}
            record.outcome = "error"
            record.error_type = str(error.get("errorType") or invocation.error_type or "")
            record.error_message = str(error.get("errorMessage") or "")
        elif init_error is not None:
            record.outcome, record.reason = "error", "init error"
            record.error_type = str(init_error.get("errorType") or "Runtime.Unknown")
            record.error_message = str(init_error.get("errorMessage") or "")
        elif self._core.stopping:
            record.outcome, record.reason = "killed", "emulator stopped"
        else:
            code = record.exit_code
            record.outcome = "crashed"
            in_init = record.cold and not record.init_ms
            record.reason = "exited without answering" + (" (init)" if in_init else "")
            record.error_type = "Runtime.ExitError"
            record.error_message = f"RequestId: {record.request_id} Error: Runtime exited" + (
                f" with error: exit status {code}" if code is not None else ""
            )
        if function.store is None:
            return
        run_id = record.run_id or self._checkpoints.find_run(function, record)
        if run_id:
            record.run_id = run_id
            self._checkpoints.read(function, record, run_id)


def _response_outcome(response: Any) -> tuple[str, str | None]:
    if isinstance(response, dict) and set(response) == {"longrun"}:
        body = response["longrun"]
        if isinstance(body, dict):
            status = str(body.get("status"))
            if body.get("existing"):
                return "existing", f"run is {status}"
            if status == Answer.CONTINUED:
                nxt = body.get("next")
                reason = "resent" if body.get("resent") else None
                outcome = Status.ESCALATED if nxt == "fargate" else Status.CONTINUED
                return outcome.value, reason
            if status == Answer.DUPLICATE:
                return Answer.DUPLICATE.value, body.get("reason")
            return status, None
    if isinstance(response, dict) and isinstance(response.get("results"), list):
        actions = [str(r.get("action")) for r in response["results"] if isinstance(r, dict)]
        if actions:  # the safety net's answer
            return ",".join(actions), None
    return Status.COMPLETED.value, None


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
