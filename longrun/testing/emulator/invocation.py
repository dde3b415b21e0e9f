"""One invocation: a cold ``awslambdaric`` process with a Runtime API of its own, supervised
to its deadline (or an injected kill), then classified from its answer and its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ...protocol import Answer, Status
from ..delivery import Delivery
from ..runtime_api import RuntimeApi, RuntimeInvocation
from .checkpoints import CheckpointReader
from .core import Core
from .environment import Environments
from .functions import LocalFunction
from .helpers import envelope_of, iso, killpg, now_ms, safety_net_run
from .records import InvocationRecord


class InvocationRunner:
    """Runs one delivery as one Lambda invocation (:meth:`execute`) and records it."""

    def __init__(
        self, core: Core, environments: Environments, checkpoints: CheckpointReader
    ) -> None:
        self._core = core
        self._environments = environments
        self._checkpoints = checkpoints
        self._active: dict[int, subprocess.Popen[str]] = {}
        """The runtime processes running now, by pid."""

    def processes(self) -> list[subprocess.Popen[str]]:
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
        with RuntimeApi() as api:
            spawned = time.monotonic()
            record.started_ms = now_ms()
            record.start_s = (record.started_ms - self._core.t0_ms) / 1000.0
            process = subprocess.Popen(
                [sys.executable, "-m", "awslambdaric", function.handler],
                env=self._environments.invocation_env(function, api.address),
                cwd=function.code_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                start_new_session=True,  # its own process group: the kill reaches children
            )
            record.pid = process.pid
            with self._core.cond:
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
                delivery.event,
                function_arn=function.arn,
                timeout_s=function.timeout_s,
                tenant_id=delivery.tenant_id,
            )
            try:
                self._supervise(function, api, invocation, process, record, spawned)
            finally:
                killpg(process)
                reader.join(timeout=5)
                with self._core.cond:
                    self._active.pop(process.pid, None)
            init_error = api.init_error
        record.ended_ms = now_ms()
        self._classify(function, record, invocation, init_error)
        self._core.finish(record)
        return record, invocation

    def _read_output(self, stream: IO[str], record: InvocationRecord) -> None:
        with stream:
            for raw in stream:
                line = raw.rstrip("\n").replace("\r", "\n  ")
                record.log.append(line)
                if self._core.echo_logs:
                    self._core.log(f"  {record.function} {record.request_id[:8]} | {line}")

    def _kill(self, process: subprocess.Popen[str], record: InvocationRecord) -> None:
        record.memory_mb = _max_rss_mb(process.pid)
        killpg(process)
        record.killed_at_ms = now_ms()

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
        init_deadline = spawned + self._core.init_timeout_s
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
                break  # the environment would be frozen now; it is never reused here
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
        elif self._core.stopping:
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
