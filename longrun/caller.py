"""The invocation a hop runs in, and its fenced writes.

:class:`Caller` is an invocation's identity (request id, function, tenant, where it runs, its
deadline and lease) with the two hand-offs (the next Lambda hop, a Fargate task).
:class:`Writer` makes one invocation's conditional writes of one run. :data:`HANDOFFS` keeps
the hand-off cost each run measured last in this process.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .checkpoint import EncodedParts, make_envelope
from .config import Settings
from .errors import (
    CheckpointConflict,
    EscalationFailed,
    HandoffFailed,
    LongrunError,
    RecursionStopped,
    shown,
)
from .observe import UNTRACED, traced, tracing_active
from .ports import Ports, active
from .protocol import Checkpoint, Claim, Escalation, HopEntry, decode
from .stores.base import CheckpointStore, Loaded
from .timing import NO_DEADLINE_MS, remaining_time

if TYPE_CHECKING:
    from .notify import Target

__all__ = ["HANDOFFS", "Caller", "HandoffTimes", "Writer", "no_function"]


class HandoffTimes:
    """The last hand-off duration measured in this process, per run.

    Async self-invocations often land on a warm instance of the same function, so a run's
    next hop starts with the cost its previous hop measured. Keyed by run id (a process may
    serve several runs at once: Lambda Managed Instances) and bounded.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._times: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, run_id: str, seconds: float) -> None:
        with self._lock:
            self._times[run_id] = seconds
            self._times.move_to_end(run_id)
            while len(self._times) > self._size:
                self._times.popitem(last=False)

    def get(self, run_id: str) -> float | None:
        with self._lock:
            return self._times.get(run_id)


HANDOFFS = HandoffTimes()


class Writer:
    """Fenced writes of one run by one invocation, each presenting the last token it got."""

    def __init__(self, store: CheckpointStore, ports: Ports, loaded: Loaded) -> None:
        self.store = store
        self.ports = ports
        self.loaded = loaded
        self.write_s: float | None = None
        self.writes: list[tuple[int, float]] = []
        """Bytes and seconds of each write by this invocation (for its metrics)."""
        self.lock = threading.RLock()  # the heartbeat thread writes too
        self.tracing = tracing_active()
        """Whether this invocation is traced (read once: the trace header is the request's)."""
        self.parts = EncodedParts()
        """The step records this writer encoded last (``run.step`` writes once a step: the
        next write re-encodes only the records replaced since)."""

    @classmethod
    def create(cls, store: CheckpointStore, ports: Ports, checkpoint: Checkpoint) -> Writer:
        """Create a new run's document (its first claim); CheckpointConflict if it exists."""
        start = ports.clock.mono()
        ports.observer.before_write(checkpoint.run_id, "claim")
        with traced("checkpoint save", checkpoint.run_id, hop=checkpoint.hop, write="claim"):
            loaded = store.create(checkpoint)
        writer = cls(store, ports, loaded)
        writer._written("claim", loaded, start)
        return writer

    def write(self, what: str, checkpoint: Checkpoint, *, prepared: bool = False) -> Loaded:
        """One fenced write of ``checkpoint`` over the last one (``prepared``: it carries the
        next ``seq`` and a fresh ``write_id``, see ``CheckpointStore.replace``)."""
        with self.lock:
            start = self.ports.clock.mono()
            self.ports.observer.before_write(checkpoint.run_id, what)
            previous = self.loaded
            with (
                traced("checkpoint save", checkpoint.run_id, hop=checkpoint.hop, write=what)
                if self.tracing
                else UNTRACED
            ):
                loaded = self.store.replace(
                    checkpoint,
                    previous.token,
                    previous=previous.checkpoint,
                    parts=self.parts,
                    prepared=prepared,
                )
            self._written(what, loaded, start)
            return loaded

    def _written(self, what: str, loaded: Loaded, start: float) -> None:
        self.write_s = self.ports.clock.mono() - start
        self.writes.append((loaded.size, self.write_s))
        self.loaded = loaded
        self.ports.observer.written(loaded.checkpoint.run_id, what, loaded)

    def stored(self) -> Checkpoint:
        """The last document written, as stored: not sharing live objects (``run.state``)."""
        data = self.loaded.data
        return decode(data, where=self.store.describe(), run_id=self.loaded.checkpoint.run_id)


class Caller:
    """The invocation a hop runs in: who it is, until when, and how it hands the run on."""

    def __init__(
        self,
        settings: Settings,
        store: CheckpointStore,
        event: Any,
        context: Any,
        *,
        lambda_client: Any = None,
        user_logger: Any = None,
        notify: Target | None = None,
    ) -> None:
        self.settings = settings
        self.user_logger = user_logger
        self.notify = notify
        """Where the run's completion notification goes (``on_complete``), if anywhere."""
        self.handoff_s: float | None = None
        """How long this invocation's hand-off took (an invoke, or a task start)."""
        self.store = store
        self.event = event
        self.context = context
        self.lambda_client = lambda_client
        self.ports = active()
        self.clock, self.transport = self.ports.clock, self.ports.transport
        self.request_id = str(getattr(context, "aws_request_id", "") or _uuid4())
        self.function = getattr(context, "invoked_function_arn", None)
        self.where = str(
            getattr(context, "longrun_where", "") or ("lambda" if context else "local")
        )
        lease = getattr(context, "longrun_lease_s", None)
        self.lease_s: float | None = float(lease) if isinstance(lease, (int, float)) else None
        self._remaining = remaining_time(context)  # a context that cannot time a hop: here
        tenant = getattr(context, "tenant_id", None)
        if tenant is not None and not isinstance(tenant, str):
            raise LongrunError(
                f"context.tenant_id is a {type(tenant).__name__} ({shown(tenant, 60)}), not a "
                "string: longrun invokes every hop of a tenant-isolated function with it."
            )
        self.tenant_id: str | None = tenant or None
        """The tenant this invocation serves (per-tenant isolation mode), if any."""
        self._claim: Claim | None = None

    def claim(self, now: int) -> Claim:
        """This invocation's lease: until its deadline, or for ``lease_s`` when it has none
        worth the name (a Fargate task), renewed by every write and by heartbeats."""
        remaining = self.remaining_ms()
        if self.lease_s is not None:
            remaining = min(remaining, int(self.lease_s * 1000))
        deadline = None if remaining >= NO_DEADLINE_MS else now + remaining
        last = self._claim
        if last is None or last.deadline_ms != deadline:  # (a claim is immutable: share it)
            last = self._claim = Claim(
                request_id=self.request_id, deadline_ms=deadline, where=self.where
            )
        return last

    def remaining_ms(self) -> int:
        return NO_DEADLINE_MS if self._remaining is None else self._remaining()

    def hop_entry(self, hop: int, attempt: int, now: int) -> HopEntry:
        return HopEntry(hop, attempt, self.where, self.request_id, started_ms=now)

    def send(self, run_id: str, hop: int, *, tenant_id: str | None = None) -> None:
        """Invoke this function asynchronously with the envelope of ``hop`` (as the run's
        tenant, for a function in per-tenant isolation mode)."""
        if not self.function:
            raise no_function(run_id)
        start = self.clock.mono()
        try:
            with traced("hand-off", run_id, hop=hop):
                self.transport.invoke_async(
                    str(self.function),
                    json.dumps(make_envelope(run_id, hop)).encode(),
                    self.lambda_client,
                    tenant_id=tenant_id or self.tenant_id,
                )
        except Exception as exc:
            if _error_code(exc) == "RecursiveInvocationException":
                raise RecursionStopped(
                    f"AWS recursive loop detection refused hop {hop} of run {run_id}. Allow "
                    "recursion for this function (aws lambda put-function-recursion-config "
                    "--recursive-loop Allow) or configure escalation to Fargate. The checkpoint "
                    "is kept."
                ) from exc
            raise HandoffFailed(
                f"run {run_id}: checkpoint saved but starting hop {hop} failed: {exc}. "
                "Lambda's retry of this invocation resumes the run from this checkpoint."
            ) from exc
        self.handoff_s = self.clock.mono() - start
        HANDOFFS.put(run_id, self.handoff_s)

    def start_task(self, writer: Writer, hop: int) -> str:
        """RunTask for ``hop``, then record its ARN (a lost race there is harmless)."""
        escalate = self.settings.escalate
        run_id = writer.loaded.checkpoint.run_id
        if escalate is None:  # callers check first; kept for the type checker and for safety
            raise EscalationFailed(f"run {run_id}: no Fargate target is configured")
        tenant = writer.loaded.checkpoint.tenant_id or self.tenant_id
        start = self.clock.mono()
        with traced("escalation", run_id, hop=hop):
            task_arn = self.transport.start_task(escalate, run_id, hop, tenant_id=tenant)
        self.handoff_s = self.clock.mono() - start
        with writer.lock:
            stored = writer.stored()
            escalation = stored.escalation or Escalation(reason="escalation", hop=hop)
            recorded = stored.replace(
                escalation=Escalation(escalation.reason, escalation.hop, task_arn),
                updated_ms=self.clock.wall_ms(),
            )
            # A lost race means the task already claimed the run: it runs, which is the point.
            with contextlib.suppress(CheckpointConflict):
                writer.write("task", recorded)
        return task_arn


def no_function(run_id: str) -> HandoffFailed:
    return HandoffFailed(
        f"run {run_id} must continue in a new invocation, but the context has no "
        "invoked_function_arn to re-invoke. Outside Lambda, run the handler through "
        "the longrun_sim fixture or give it a context."
    )


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return type(exc).__name__


def _uuid4() -> str:
    import uuid  # (on demand: uuid and the platform module it loads cost ~2 ms at import)

    return str(uuid.uuid4())
