"""Waiting and reporting: when the emulator has settled, and what happened, run by run."""

from __future__ import annotations

import time

from ...protocol import Answer
from .core import Core
from .fargate import FargateInMoto
from .functions import LocalFunction
from .helpers import now_ms
from .invoker import Invoker
from .records import InvocationRecord, Report, RunSummary, handoffs


class Reporter:
    """Tells when the emulator has settled, and builds its :class:`Report`."""

    def __init__(self, core: Core, invoker: Invoker, fargate: FargateInMoto) -> None:
        self._core = core
        self._invoker = invoker
        self._fargate = fargate

    def settled(self) -> bool:
        """Whether the emulator has settled: see :meth:`LocalLambda.settled`."""
        with self._core.cond:
            return self._settled_locked()

    def _settled_locked(self) -> bool:
        return self._invoker.idle() and self._fargate.idle() and not self._core.pending_wakes

    def wait(self, timeout: float = 120.0) -> Report:
        """Wait for the emulator to settle: see :meth:`LocalLambda.wait`."""
        deadline = time.monotonic() + timeout
        with self._core.cond:
            while not self._settled_locked():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._core.cond.wait(min(left, 0.2))
            settled = self._settled_locked()
        report = self.report()
        if not settled:
            raise TimeoutError(f"the emulator did not settle within {timeout} s\n{report.text()}")
        return report

    def report(self) -> Report:
        """Everything recorded so far: see :meth:`LocalLambda.report`."""
        with self._core.cond:
            records = sorted(self._core.records, key=lambda r: (r.started_ms, r.index))
            dead = list(self._core.dead_letters)
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
            function = self._core.functions.get(function_name)
            if function is None or function.store is None:
                continue
            runs.append(self._summary(function, run_id, records))
        return Report(records, runs, dead, (now_ms() - self._core.t0_ms) / 1000.0)

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
            if r.outcome == Answer.DUPLICATE
            or (r.outcome == "error" and r.error_type == "ClaimBusy")
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
            started_ms=min((r.started_ms for r in mine), default=self._core.t0_ms),
            ended_ms=max((r.ended_ms for r in mine), default=self._core.t0_ms),
        )
