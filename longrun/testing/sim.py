"""An in-process Lambda on virtual time: runs a whole chain of hops in milliseconds.

Each invocation gets a fresh :class:`FakeContext` whose deadline is armed on the virtual
clock. ``time.sleep`` (and ``asyncio.sleep``) inside the handler advance that clock; passing
the deadline raises :class:`HopKilled` out of the handler, so its work after the last
checkpoint is lost, and the invocation is retried like Lambda retries an async invocation
(2 retries, the same event and request id, after 1 and 2 minutes). Continuation envelopes
that the handler sends are delivered as the next invocations. Faults can be injected:
duplicate deliveries, a crash between the checkpoint and the hand-off, failed store writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from .. import ports
from ..checkpoint import make_envelope
from ..errors import StoreError
from ..handoff.lambda_invoke import MAX_ASYNC_PAYLOAD
from ..protocol import Status
from ..run import Run
from ..stores import CheckpointStore, MemoryStore
from .clock import HopKilled, VirtualClock
from .context import FakeContext
from .delivery import AsyncDelivery, Delivery

__all__ = ["Delivery", "Faults", "HopRecord", "LambdaSim", "Outcome", "SimulatedCrash"]


class SimulatedCrash(BaseException):
    """An injected process crash (no Python cleanup of longrun's own runs)."""


@dataclass
class Faults:
    """Faults to inject into a simulated run.

    * ``duplicate``: ``"after"`` delivers every event a second time right after its first
      delivery returns; ``"during"`` delivers it again while the first is still running
      (at its first checkpoint write). Duplicates carry the same request id, as Lambda's do.
    * ``crash_before_handoff``: hop numbers whose invocation dies after writing the
      "continued" checkpoint and before the next hop is sent (once each).
    * ``fail_writes``: 1-based numbers of checkpoint writes (counted over the whole run)
      that fail with a StoreError, as an S3 500 or a full disk would.
    * ``sigterm_after_s``: ``{hop: seconds}``, a SIGTERM to the Fargate task running ``hop``.
    """

    duplicate: str | None = None
    duplicate_request_id: str = "same"
    """``"same"``: a duplicate carries the original's request id (as Lambda's do);
    ``"new"``: a fresh one, as a second Invoke of the same payload would."""
    crash_before_handoff: set[int] = field(default_factory=set)
    fail_writes: set[int] = field(default_factory=set)
    sigterm_after_s: dict[int, float] = field(default_factory=dict)
    """Hop numbers of Fargate tasks that get a SIGTERM (a Spot interruption) that many
    virtual seconds after they start."""

    def __post_init__(self) -> None:
        if self.duplicate not in (None, "after", "during"):
            raise ValueError(f"Faults(duplicate={self.duplicate!r}): use None, 'after' or 'during'")
        if self.duplicate_request_id not in ("same", "new"):
            raise ValueError(
                f"Faults(duplicate_request_id={self.duplicate_request_id!r}): use 'same' or 'new'"
            )

    def duplicate_of(self, delivery: Delivery) -> Delivery:
        """The duplicate delivery of ``delivery``."""
        return AsyncDelivery.duplicate(delivery, new_request_id=self.duplicate_request_id == "new")


@dataclass
class HopRecord:
    """One invocation as the simulator saw it."""

    kind: str
    request_id: str
    attempt: int
    started_s: float
    ended_s: float = 0.0
    where: str = "lambda"
    hop: int | None = None
    """The hop number this invocation claimed (``None`` if it claimed nothing)."""
    items: int = 0
    outcome: str = ""
    """completed, continued, duplicate, killed, crashed, error, cancelled, superseded, stopped."""
    response: Any = None
    error: BaseException | None = None
    ran_user_code: bool = False
    envelope_bytes: int | None = None
    run_id: str | None = None
    """The run this invocation claimed (``run.map``'s children are runs of their own)."""


@dataclass
class Outcome:
    """What a simulated run ended as."""

    run_id: str | None
    status: str | None
    result: Any
    error: dict[str, Any] | None
    hops: list[HopRecord]
    """Invocations that claimed the run and ran the handler, in order."""
    invocations: list[HopRecord]
    """Every delivery, including duplicates refused and kills."""
    written: list[bytes]
    """Every checkpoint written, in order, as stored (``checkpoints`` decodes them)."""
    dead_letters: list[Delivery]
    """Events that failed every retry (what an on-failure destination would receive)."""
    clock: VirtualClock
    store: CheckpointStore | None = None
    """The store the run was checkpointed to (the simulator's in-memory one by default)."""

    @functools.cached_property
    def checkpoints(self) -> list[dict[str, Any]]:
        """Every checkpoint document written, in order (decoded from the stored bytes on
        first use: a long run's thousands of writes are kept as bytes until asked for)."""
        return [_decoded(data) for data in self.written]

    @functools.cached_property
    def document(self) -> dict[str, Any] | None:
        """The last checkpoint written."""
        return _decoded(self.written[-1]) if self.written else None

    @property
    def state(self) -> dict[str, Any] | None:
        """``run.state`` as last checkpointed."""
        return None if self.document is None else self.document.get("state")

    @property
    def elapsed_s(self) -> float:
        """Virtual seconds from the first delivery to the last invocation's end."""
        return (
            self.invocations[-1].ended_s - self.invocations[0].started_s
            if self.invocations
            else 0.0
        )

    def summary(self) -> str:
        """One line per invocation, for printing."""
        lines = []
        for record in self.invocations:
            hop = "-" if record.hop is None else str(record.hop)
            line = (
                f"{record.kind:<9} hop {hop:>3} attempt {record.attempt} {record.where:<6} "
                f"t={record.started_s:9.1f}s..{record.ended_s:9.1f}s items={record.items:<6} "
                f"{record.outcome}"
            )
            if record.error is not None:
                line += f" {type(record.error).__name__}: {_cut(str(record.error))}"
            lines.append(line)
        lines.append(f"status={self.status} result={self.result!r}")
        return "\n".join(lines)


class _SimHooks(ports.Clock, ports.Transport, ports.Observer):
    """The simulator's clock, transport and observer in one: virtual time, an in-process
    hand-off, injected faults."""

    invoke_threads = 1  # a fan-out's children are queued in order: runs stay reproducible

    def __init__(self, sim: LambdaSim, record: HopRecord, delivery: Delivery) -> None:
        self.sim = sim
        self.record = record
        self.delivery = delivery
        self.run: Run | None = None
        self.duplicated = False

    def wall_ms(self) -> int:
        return self.sim.clock.wall_ms()

    def mono(self) -> float:
        return self.sim.clock.mono()

    def before_write(self, run_id: str, what: str) -> None:
        sim = self.sim
        if sim.write_latency_s:
            sim.clock.advance(sim.write_latency_s)
        sim._writes += 1
        if sim._writes in sim.faults.fail_writes:
            raise StoreError(f"injected failure of checkpoint write #{sim._writes} ({what})")
        if (
            what != "claim"
            and sim.faults.duplicate == "during"
            and not self.duplicated
            and self.delivery.kind != "duplicate"
        ):
            self.duplicated = True
            sim._deliver(sim.faults.duplicate_of(self.delivery))

    def written(self, run_id: str, what: str, loaded: Any) -> None:
        # (not after_write: the stored bytes are the snapshot, and decoding them costs half
        # a deep copy of the document)
        sim = self.sim
        if sim._run_id is None:
            sim._run_id = run_id  # the run started; others are its children (run.map)
        if run_id == sim._run_id:
            sim._checkpoints.append(bytes(loaded.data))
        else:
            sim.children[run_id] = _decoded(loaded.data)

    def on_run(self, run: Run, heartbeat: Callable[[], bool]) -> None:
        self.run = run
        self.record.run_id = run.id
        self.record.hop = run.hop
        self.record.where = run.where
        self.record.ran_user_code = True

    def start_task(
        self, settings: Any, run_id: str, hop: int, *, tenant_id: str | None = None
    ) -> str:
        arn = f"arn:aws:ecs:us-east-1:123456789012:task/sim/{uuid.uuid4().hex}"
        self.sim.tasks.append({"task_arn": arn, "run_id": run_id, "hop": hop})
        self.sim._queue.append(
            Delivery(
                make_envelope(run_id, hop),
                f"fargate-{uuid.uuid4()}",
                1,
                "fargate",
                tenant_id=tenant_id,
            )
        )
        return arn

    def schedule_wake(
        self,
        function: str,
        payload: bytes,
        at_ms: int,
        *,
        name: str,
        tenant_id: str | None = None,
    ) -> str:
        """A one-time schedule on the virtual clock: its delivery is due at ``at_ms``."""
        sim = self.sim
        at_s = at_ms / 1000 - sim.clock.start_epoch_s
        signal = None if self.run is None else self.run.signal
        # a callback's timeout waits for the test (send_callback or resume) to come first
        kind = "timeout" if getattr(signal, "kind", None) == "callback" else "wake"
        sim.schedules.append({"name": name, "at_ms": at_ms, "payload": json.loads(payload)})
        sim._queue.append(
            Delivery(
                json.loads(payload),
                str(uuid.uuid4()),
                1,
                kind,
                not_before=at_s,
                tenant_id=tenant_id,
            )
        )
        return name

    def cancel_wake(self, name: str) -> None:
        """A deleted schedule: its delivery leaves the queue."""
        sim = self.sim
        wanted = [s["payload"] for s in sim.schedules if s["name"] == name]
        if wanted:
            sim._queue = deque(
                d
                for d in sim._queue
                if not (d.kind in ("wake", "timeout") and d.event == wanted[-1])
            )

    def invoke_async(
        self, function: str, payload: bytes, client: Any, *, tenant_id: str | None = None
    ) -> None:
        sim = self.sim
        if sim.handoff_latency_s:
            sim.clock.advance(sim.handoff_latency_s)
        if len(payload) > MAX_ASYNC_PAYLOAD:
            raise RuntimeError(f"RequestEntityTooLargeException: {len(payload)} bytes")
        self.record.envelope_bytes = len(payload)
        event = json.loads(payload)
        hop_from = event["longrun"]["hop"] - 1 if "longrun" in event else -1
        if hop_from in sim.faults.crash_before_handoff:
            sim.faults.crash_before_handoff.discard(hop_from)
            raise SimulatedCrash(f"injected crash before handing off hop {hop_from + 1}")
        sim._queue.append(Delivery(event, str(uuid.uuid4()), 1, "hop", tenant_id=tenant_id))


class LambdaSim:
    """Runs a decorated handler's whole chain of hops in-process on virtual time."""

    def __init__(
        self, clock: VirtualClock | None = None, *, store: CheckpointStore | str = "memory"
    ) -> None:
        self.clock = clock or VirtualClock()
        self.store = _store_choice(store)
        """``"memory"`` (default): every run gets a fresh in-memory store, whatever store the
        handler's decorator names (a production ``S3Store("my-bucket")`` needs no AWS here);
        ``"handler"``: the handler's own store; or a store to use instead of the handler's."""
        self._store_used: CheckpointStore | None = None
        self.settings: dict[str, Any] = {}
        self.faults = Faults()
        self.write_latency_s = 0.0
        self.handoff_latency_s = 0.0
        self._queue: deque[Delivery] = deque()
        self._records: list[HopRecord] = []
        self._checkpoints: list[bytes] = []
        """The bytes of each checkpoint the run wrote (decoded when the outcome is read)."""
        self._dead: list[Delivery] = []
        self._writes = 0
        self.tasks: list[dict[str, Any]] = []
        """Fargate tasks started (``task_arn``, ``run_id``, ``hop``); each runs as a delivery."""
        self.children: dict[str, Mapping[str, Any]] = {}
        """The last document written of each other run the run started (``run.map``'s
        children), by run id."""
        self.schedules: list[dict[str, Any]] = []
        """One-time wake-ups scheduled (``name``, ``at_ms``, ``payload``); each is a delivery
        of kind ``wake`` at its virtual time."""
        self.fargate_max_s = 86400.0
        self.fargate_lease_s = 600.0
        self.fargate_stop_s = 20.0
        self._run_id: str | None = None
        self._handler: Callable[..., Any] | None = None
        self._timeout_s = 900.0
        self._async = AsyncDelivery()
        self._function_name = "longrun-sim"
        self._thread = threading.get_ident()

    def run(
        self,
        handler: Callable[..., Any],
        event: Any,
        *,
        timeout_s: float = 900.0,
        retries: int = 2,
        retry_delays_s: tuple[float, ...] = (60.0, 120.0),
        faults: Faults | None = None,
        settings: Mapping[str, Any] | None = None,
        store: CheckpointStore | str | None = None,
        tenant_id: str | None = None,
        write_latency_s: float = 0.0,
        handoff_latency_s: float = 0.0,
        max_invocations: int = 1000,
        function_name: str = "longrun-sim",
        fargate_stop_s: float = 20.0,
    ) -> Outcome:
        """Deliver ``event`` to ``handler`` and every continuation after it, until quiet.

        ``settings`` override the decorator's arguments and ``LONGRUN_*`` variables for this
        run (keys as the decorator's: ``max_hops``, ``margin_ms``, ``min_margin_ms``,
        ``checkpoint_every_s``, ``max_run_seconds``). ``write_latency_s`` and
        ``handoff_latency_s`` add virtual time to every checkpoint write and hand-off.
        Escalations to Fargate run as deliveries of kind ``fargate``: a container context with
        a day of remaining time, a leased claim, no Lambda retries; ``fargate_stop_s`` is the
        time left after a SIGTERM (see ``Faults.sigterm_after_s``). ``store`` overrides the
        simulator's ``store`` for this run (``"memory"``, ``"handler"`` or a store).
        ``tenant_id``: the first invocation's tenant (a function in per-tenant isolation
        mode); hand-offs that carry it deliver it again.
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s!r} must be positive")
        self._handler = handler
        self._timeout_s = timeout_s
        self._async = AsyncDelivery(retries=retries, retry_delays_s=retry_delays_s)
        self.faults = faults or Faults()
        self.settings = dict(settings or {})
        choice = self.store if store is None else _store_choice(store)
        self._store_used = None
        if "checkpoint" not in self.settings and choice != "handler":
            used = choice if isinstance(choice, CheckpointStore) else MemoryStore()
            self._store_used = used
            self.settings["checkpoint"] = used
        self.write_latency_s = write_latency_s
        self.handoff_latency_s = handoff_latency_s
        self._function_name = function_name
        self._queue = deque([Delivery(event, str(uuid.uuid4()), tenant_id=tenant_id)])
        self._records, self._checkpoints, self._dead = [], [], []
        self._writes = 0
        self.tasks = []
        self.schedules = []
        self.children = {}
        self.fargate_stop_s = fargate_stop_s
        self._run_id = None
        return self._drain(max_invocations)

    def send_callback(
        self,
        token: str,
        payload: Any = None,
        *,
        error: str | None = None,
        store: CheckpointStore | None = None,
        max_invocations: int = 1000,
    ) -> Outcome:
        """Answer a callback of the last run (``longrun.send_callback``, or ``fail_callback``
        with ``error``) on the simulator's clock and transport, then carry the run on until
        quiet (the wake-up is a delivery like any other); returns the updated outcome.
        ``store``: the run's store when the simulator used the handler's own."""
        from ..callbacks import fail_callback, send_callback

        chosen = self._chosen_store(store, "send_callback")
        with self._outside("callback"):
            if error is not None:
                fail_callback(token, error, store=chosen)
            else:
                send_callback(token, payload, store=chosen)
        return self._drain(max_invocations)

    def cancel(
        self, run_id: str, *, store: CheckpointStore | None = None, max_invocations: int = 1000
    ) -> Outcome:
        """Cancel ``run_id`` (``store.cancel``: a parent's ``run.map`` children too; a
        cancelled child joins its parent, which may wake it) on the simulator's clock and
        transport, then carry on until quiet; returns the updated outcome."""
        chosen = self._chosen_store(store, "cancel")
        with self._outside("cancel"):
            document = chosen.cancel(run_id)
        if run_id == self._run_id:
            self._checkpoints.append(json.dumps(document).encode())
        return self._drain(max_invocations)

    def resume_run(
        self, run_id: str, *, store: CheckpointStore | None = None, max_invocations: int = 1000
    ) -> Outcome:
        """``longrun resume RUN_ID`` (a new invocation of the run's next hop, when nothing
        holds it) on the simulator's clock and transport, then carry on until quiet."""
        from ..resume import resume_in_lambda

        chosen = self._chosen_store(store, "resume_run")
        with self._outside("resume"):
            resume_in_lambda(chosen, run_id)
        return self._drain(max_invocations)

    def _chosen_store(self, store: CheckpointStore | None, what: str) -> CheckpointStore:
        chosen = store or self._store_used
        if chosen is None:
            raise ValueError(f"LambdaSim.{what}: pass store=, the handler's own store")
        return chosen

    @contextlib.contextmanager
    def _outside(self, kind: str) -> Iterator[None]:
        """Code run from outside the function (a CLI, another system) on the simulator's
        clock and transport."""
        record = HopRecord(kind, "", 1, self.clock.now)
        hooks = _SimHooks(self, record, Delivery({}, kind, kind=kind))
        with ports.installed(clock=hooks, transport=hooks):
            yield

    def resume(self, *, timeouts: bool = True, max_invocations: int = 1000) -> Outcome:
        """Carry the last run on: with ``timeouts``, a run waiting for a callback is woken at
        its timeout (virtual time skips there), as no answer came."""
        return self._drain(max_invocations, timeouts=timeouts)

    def _next_delivery(self) -> Delivery:
        """The earliest due delivery (in queue order among equals)."""
        earliest = min(range(len(self._queue)), key=lambda i: self._queue[i].not_before)
        delivery = self._queue[earliest]
        del self._queue[earliest]
        return delivery

    def _drain(self, max_invocations: int, *, timeouts: bool = False) -> Outcome:
        """Deliver until quiet. A callback's timeout wake-up is not delivered unless
        ``timeouts``: the run stays waiting, for the test to answer (``send_callback``) or
        to let it time out (``resume()``)."""
        self._thread = threading.get_ident()
        with self._virtual_sleep():
            while self._queue:
                if not timeouts and all(d.kind == "timeout" for d in self._queue):
                    break
                if len(self._records) >= max_invocations:
                    raise RuntimeError(
                        f"the simulated run did not settle within {max_invocations} invocations "
                        "(a runaway chain?)"
                    )
                delivery = self._next_delivery()
                if delivery.not_before > self.clock.now:
                    self.clock.now = delivery.not_before
                record = self._deliver(delivery)
                if self.faults.duplicate == "after" and delivery.kind != "duplicate":
                    self._queue.appendleft(self.faults.duplicate_of(delivery))
                del record
        return self._outcome()

    def _deliver(self, delivery: Delivery) -> HopRecord:
        clock = self.clock
        fargate = delivery.kind == "fargate"
        context = FakeContext(
            clock,
            timeout_s=self.fargate_max_s if fargate else self._timeout_s,
            function_name=self._function_name,
            request_id=delivery.request_id,
            tenant_id=delivery.tenant_id,
        )
        if fargate:
            context.longrun_where = "fargate"
            context.longrun_lease_s = self.fargate_lease_s
            context.invoked_function_arn = None  # type: ignore[assignment]
            hop = delivery.event["longrun"]["hop"]
            if hop in self.faults.sigterm_after_s:
                grace = self.fargate_stop_s
                clock.at(
                    clock.now + self.faults.sigterm_after_s.pop(hop), lambda: context.stop(grace)
                )
        record = HopRecord(
            kind=delivery.kind,
            request_id=delivery.request_id,
            attempt=delivery.attempt,
            started_s=clock.now,
        )
        self._records.append(record)
        hooks = _SimHooks(self, record, delivery)
        saved_deadline = clock.deadline
        clock.deadline = context.deadline_s
        try:
            with ports.installed(
                clock=hooks, transport=hooks, observer=hooks, settings=self.settings
            ):
                response = self._call(delivery.event, context)
        except HopKilled as exc:
            record.outcome, record.error = "killed", exc
            self._retry(delivery)
        except SimulatedCrash as exc:
            record.outcome, record.error = "crashed", exc
            self._retry(delivery)
        except Exception as exc:
            record.outcome, record.error = "error", exc
            self._retry(delivery)
        else:
            record.response = response
            status = None
            if isinstance(response, dict) and isinstance(response.get("longrun"), dict):
                status = response["longrun"].get("status")
            record.outcome = status or Status.COMPLETED.value
        finally:
            clock.deadline = saved_deadline
            record.ended_s = clock.now
            if hooks.run is not None:
                record.items = hooks.run.items_done()
        return record

    def _call(self, event: Any, context: FakeContext) -> Any:
        assert self._handler is not None
        result = self._handler(event, context)
        if inspect.iscoroutine(result):
            return asyncio.run(result)
        return result

    def _retry(self, delivery: Delivery) -> None:
        """Lambda's answer to a failed delivery: a retry later, or a dead letter."""
        retry = self._async.after_failure(delivery, self.clock.now)
        if retry is not None:
            self._queue.append(retry)
        elif self._async.dead_letters(delivery):
            self._dead.append(delivery)

    @contextlib.contextmanager
    def _virtual_sleep(self) -> Iterator[None]:
        real_sleep = time.sleep
        real_async_sleep = asyncio.sleep
        clock, thread = self.clock, self._thread

        def sleep(seconds: float) -> None:
            if threading.get_ident() == thread:
                clock.sleep(seconds)
            else:  # other threads (a moto server, botocore's pools) keep real time
                real_sleep(seconds)

        async def async_sleep(delay: float, result: Any = None) -> Any:
            clock.sleep(delay)
            await real_async_sleep(0)
            return result

        with (
            mock.patch.object(time, "sleep", sleep),
            mock.patch.object(asyncio, "sleep", async_sleep),
        ):
            yield

    def _outcome(self) -> Outcome:
        document = _decoded(self._checkpoints[-1]) if self._checkpoints else None
        status = None if document is None else document.get("status")
        if document is None and self._records and self._records[-1].outcome == Status.COMPLETED:
            status = Status.COMPLETED.value  # LONGRUN_DISABLED: no checkpoints, a plain return
        result: Any = None
        if status == Status.COMPLETED:
            completing = [
                r
                for r in self._records
                if r.outcome == Status.COMPLETED
                and (r.run_id == self._run_id or (document is None and r.run_id is None))
            ]
            if completing:
                result = completing[-1].response
            elif document is not None:
                result = document.get("result")
        return Outcome(
            run_id=self._run_id,
            status=status,
            result=result,
            error=None if document is None else document.get("error"),
            hops=[r for r in self._records if r.ran_user_code],
            invocations=list(self._records),
            written=list(self._checkpoints),
            dead_letters=list(self._dead),
            clock=self.clock,
            store=self._store_used,
        )


def _decoded(data: bytes) -> dict[str, Any]:
    """A written document from its bytes, through orjson when it is installed."""
    try:
        import orjson
    except ImportError:
        return dict(json.loads(data))
    decoded: dict[str, Any] = orjson.loads(data)
    return decoded


def _store_choice(store: CheckpointStore | str) -> CheckpointStore | str:
    if store in ("memory", "handler") or isinstance(store, CheckpointStore):
        return store
    raise ValueError(
        f"LambdaSim store={store!r}: use 'memory' (the default), 'handler' (the handler's own "
        "store) or a CheckpointStore"
    )


def _cut(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
