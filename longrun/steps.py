"""``run.step``, ``run.sleep`` and ``run.sleep_until``: work and waits that outlive hops.

A step's result is stored in the checkpoint (``steps``, by path) once its function returned,
so a later hop (a retry, a continuation, a wake-up) gets the stored result without calling
the function again. A result over ``INLINE_LIMIT`` bytes of JSON is kept as a side object
in the store (``{run_id}/steps/{digest}.json``) and read back on demand.

Names are scoped like loops: a step inside a ``run.iterate`` item belongs to that item (its
record carries the loop positions it ran at, ``scope``), and a step name may be used once
per scope and hop.

A wait that fits in the hop's remaining time (less the margin) happens in the process; a
longer one ends the hop: the run is checkpointed ``waiting`` and woken at its time by a
one-time schedule (EventBridge Scheduler in AWS, the simulator's clock in tests), with no
compute in between. A retry backoff longer than the time left waits the same way.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from types import FunctionType
from typing import TYPE_CHECKING, Any

from .checkpoint import is_plain_json
from .errors import LongrunError, StateNotSerializable, StepInterrupted, shown

if TYPE_CHECKING:
    from .run import Run

__all__ = ["INLINE_LIMIT", "Retry", "sleep_until", "sleep_until_async", "step"]

log = logging.getLogger("longrun")

INLINE_LIMIT = 32 * 1024
"""A step result larger than this (JSON bytes) is kept as a side object, not inline."""


@dataclass(frozen=True)
class Retry:
    """How ``run.step`` retries its function: up to ``attempts`` calls in all; before call
    ``n + 1`` it waits ``min(max_backoff_s, backoff_s * 2 ** (n - 1))`` seconds, times a
    random factor in [0.5, 1] with ``jitter``; only exceptions in ``on`` are retried."""

    attempts: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    jitter: bool = True
    on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        if type(self.attempts) is not int or self.attempts < 1:
            raise LongrunError(f"Retry(attempts={shown(self.attempts)}): give a whole number >= 1.")
        if not (self.backoff_s >= 0 and self.max_backoff_s >= 0):
            raise LongrunError(
                f"Retry(backoff_s={shown(self.backoff_s)}, max_backoff_s="
                f"{shown(self.max_backoff_s)}): give durations >= 0 in seconds."
            )

    def delay_s(self, attempt: int) -> float:
        """The wait after failed call number ``attempt`` (1-based)."""
        base = float(min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1)))
        return base * (0.5 + random.random() / 2) if self.jitter else base


_ONCE = Retry(attempts=1)
"""The policy of a step without ``retry=``: one call."""


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("#"):
        raise LongrunError(
            f"run.{kind}(name={shown(name)}): a name must be a non-empty string without '/' "
            "and not starting with '#'."
        )
    return name


def _record(run: Run, kind: str, name: str) -> tuple[str, list[int], dict[str, Any] | None]:
    """The step's path, its scope (the open loops' positions) and its stored record, if it
    is this scope's (a record from an earlier item of the same loop is not)."""
    path = run._path_for(_check_name(kind, name))
    scope = [loop.pos for loop in run._stack]
    used = (path, tuple(scope))
    if used in run._steps_used:
        raise LongrunError(
            f"run.{kind}(name={shown(name)}) was already used in this scope: each step and "
            "sleep needs its own name (a name is scoped to the item of the loop around it)."
        )
    run._steps_used.add(used)
    record = run._step_records.get(path)
    if record is not None and list(record.get("scope", [])) != scope:
        record = None
    return path, scope, record


def step(
    run: Run,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    retry: Retry | None,
    at_most_once: bool,
) -> Any:
    """``run.step``: see the module docstring. For a coroutine function, the result is a
    coroutine to await (``await run.step("fetch", fetch_async, url)``)."""
    if _is_async(fn):
        return _adrive(_flow(run, name, fn, retry, at_most_once), fn, args, kwargs)
    if retry is not None or at_most_once:
        return _drive(_flow(run, name, fn, retry, at_most_once), fn, args, kwargs)
    # A plain step (most of them): its first call is the flow's one call, made directly.
    _check_step(run, name, fn, retry)
    path, scope, record = _record(run, "step", name)
    if record is not None:
        return _drive(_recorded_flow(run, name, path, scope, record, None, False), fn, args, kwargs)
    result = fn(*args, **kwargs)
    _store_result(run, path, scope, result, 1)
    run.checkpoint()
    return result


def _is_async(fn: Any) -> bool:
    """``inspect.iscoroutinefunction(fn)``, its answer for a plain function read straight
    from the code flags (a step asks at every call)."""
    if type(fn) is FunctionType and not hasattr(fn, "_is_coroutine_marker"):
        return bool(fn.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(fn)


_Op = tuple[str, float]
"""What the step's flow asks its driver for: ``("call", 0)`` or ``("sleep", seconds)``."""


def _drive(
    flow: Generator[_Op, Any, Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
) -> Any:
    try:
        op = next(flow)
        while True:
            if op[0] == "sleep":
                time.sleep(op[1])
                op = flow.send(None)
                continue
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(value)
    except StopIteration as stop:
        return stop.value


async def _adrive(
    flow: Generator[_Op, Any, Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
) -> Any:
    import asyncio

    try:
        op = next(flow)
        while True:
            if op[0] == "sleep":
                await asyncio.sleep(op[1])
                op = flow.send(None)
                continue
            try:
                value = await fn(*args, **kwargs)
            except BaseException as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(value)
    except StopIteration as stop:
        return stop.value


def _flow(
    run: Run, name: str, fn: Callable[..., Any], retry: Retry | None, at_most_once: bool
) -> Generator[_Op, Any, Any]:
    """A step's logic, whatever calls its function: yields ``("call", 0)`` to get the
    function's result (or its exception thrown in), ``("sleep", s)`` for a backoff that fits
    in the hop; returns the step's result."""
    _check_step(run, name, fn, retry)
    path, scope, record = _record(run, "step", name)
    return (yield from _recorded_flow(run, name, path, scope, record, retry, at_most_once))


def _check_step(run: Run, name: str, fn: Callable[..., Any], retry: Retry | None) -> None:
    if run.signal is not None:
        raise run.signal
    if not callable(fn):
        raise LongrunError(f"run.step({name!r}, fn={shown(fn)}): fn must be callable.")
    if retry is not None and not isinstance(retry, Retry):
        raise LongrunError(f"run.step({name!r}, retry={shown(retry)}): give a longrun.Retry.")


def _recorded_flow(
    run: Run,
    name: str,
    path: str,
    scope: list[int],
    record: dict[str, Any] | None,
    retry: Retry | None,
    at_most_once: bool,
) -> Generator[_Op, Any, Any]:
    """:func:`_flow` once the step's path, scope and record are known."""
    if record is not None and record["state"] == "done":
        return _stored_result(run, path, record)
    attempts = 0
    if record is not None and record["state"] == "started":
        if at_most_once:
            raise StepInterrupted(
                f"run.step({name!r}) was interrupted in an earlier hop (attempt "
                f"{record.get('attempts', 1)}) and is at_most_once: it is not run again. "
                "Catch StepInterrupted to decide what to do (look its effect up, or fail)."
            )
        attempts = int(record.get("attempts", 1))
    elif record is not None and record["state"] == "retrying":
        attempts = int(record.get("attempts", 1))
        yield from _wait(run, path, record, int(record.get("until_ms") or 0), "retry")
    policy = retry or _ONCE
    while True:
        attempts += 1
        if at_most_once:
            run._step_records[path] = {"state": "started", "scope": scope, "attempts": attempts}
            run.checkpoint()
        try:
            result = yield ("call", 0.0)
        except policy.on as exc:
            if attempts >= policy.attempts:
                raise
            until_ms = run._wall_ms() + int(policy.delay_s(attempts) * 1000)
            record = {
                "state": "retrying",
                "scope": scope,
                "attempts": attempts,
                "until_ms": until_ms,
                "error": f"{type(exc).__name__}: {str(exc)[:200]}",
            }
            run._step_records[path] = record
            yield from _wait(run, path, record, until_ms, "retry")
            continue
        _store_result(run, path, scope, result, attempts)
        run.checkpoint()
        return result


def _store_result(run: Run, path: str, scope: list[int], result: Any, attempts: int) -> None:
    record: dict[str, Any] = {"state": "done", "scope": scope, "attempts": attempts}
    if _small_scalar(result):  # plain JSON and inline: nothing to check or measure
        record["result"] = result
        run._step_records[path] = record
        return
    if not is_plain_json(result):
        raise StateNotSerializable(
            f"run.step({path!r}) returned {shown(result, 80)}, which is not plain JSON "
            "(dict with str keys, list, str, int, finite float, bool, None): return a JSON "
            "value so that later hops can be given it.",
            path=f"run.steps[{path!r}]",
        )
    data = _encode(result)
    if len(data) > INLINE_LIMIT and run._side is not None:
        digest = hashlib.sha256(f"{path}|{scope}".encode()).hexdigest()[:32]
        ref = f"{run.id}/steps/{digest}.json"
        run._side.put(ref, data)
        record.update(ref=ref, bytes=len(data))
    else:
        record["result"] = result
    run._step_records[path] = record


def _small_scalar(value: Any) -> bool:
    """Whether ``value`` is a JSON scalar far below ``INLINE_LIMIT`` (most step results)."""
    kind = type(value)
    if kind is int:
        return bool(-(2**63) <= value < 2**64)
    if kind is str:
        return len(value) <= INLINE_LIMIT // 8  # (at most 6 bytes a character, quoted)
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is bool


def _encode(result: Any) -> bytes:
    """``result`` as JSON bytes (orjson when it takes it: a step is on the hot path)."""
    try:
        import orjson

        return orjson.dumps(result)
    except (ImportError, TypeError):
        return json.dumps(result, separators=(",", ":"), allow_nan=False).encode()


def _stored_result(run: Run, path: str, record: dict[str, Any]) -> Any:
    ref = record.get("ref")
    if ref is None:
        return record.get("result")
    data = None if run._side is None else run._side.read(str(ref))
    if data is None:
        raise LongrunError(
            f"run.step({path!r}): its stored result {ref} is missing from the store; it "
            "was deleted by hand? Delete the run and start again."
        )
    return json.loads(data)


def sleep_until(run: Run, name: str, when_ms: int | None, seconds: float | None) -> None:
    """``run.sleep`` (``seconds``) and ``run.sleep_until`` (``when_ms``)."""
    for _, left in _sleep_flow(run, name, when_ms, seconds):
        _warn_if_in_event_loop(run, name, left)
        time.sleep(left)


async def sleep_until_async(
    run: Run, name: str, when_ms: int | None, seconds: float | None
) -> None:
    """``await run.sleep_async(...)`` / ``run.sleep_until_async(...)``: the same sleep, with
    ``asyncio.sleep`` in the process (the event loop runs the handler's other tasks)."""
    import asyncio

    for _, left in _sleep_flow(run, name, when_ms, seconds):
        await asyncio.sleep(left)


def _sleep_flow(
    run: Run, name: str, when_ms: int | None, seconds: float | None
) -> Generator[_Op, Any, None]:
    """A sleep's logic: yields ``("sleep", seconds)`` for the driver to sleep in the process
    when the wait fits in the hop (else the hop ends waiting), then records it done."""
    if run.signal is not None:
        raise run.signal
    path, scope, record = _record(run, "sleep", name)
    if record is not None and record["state"] == "done":
        return
    if record is None:
        until_ms = when_ms if when_ms is not None else run._wall_ms() + int((seconds or 0) * 1000)
        record = {"state": "sleeping", "scope": scope, "until_ms": until_ms}
        run._step_records[path] = record
    yield from _wait(run, path, record, int(record["until_ms"]), "sleep")
    run._step_records[path] = {"state": "done", "scope": scope, "until_ms": record["until_ms"]}
    run.checkpoint()


def _warn_if_in_event_loop(run: Run, name: str, seconds: float) -> None:
    """``run.sleep`` in an ``async def`` handler blocks its event loop: say so (once a call)."""
    asyncio = sys.modules.get("asyncio")  # (never imported here: a sync handler has no loop)
    if asyncio is not None and asyncio._get_running_loop() is not None:
        log.warning(
            "run %s: run.sleep(name=%r) blocks the event loop for %.3g s in an async handler;"
            " use `await run.sleep_async(...)`",
            run.id,
            name,
            seconds,
        )


def _wait(
    run: Run, path: str, record: dict[str, Any], until_ms: int, kind: str
) -> Generator[_Op, Any, None]:
    """Wait until ``until_ms``: in the process (a ``sleep`` for the driver) if it fits in the
    hop (less the margin), else end the hop waiting, to be woken at that time."""
    left_ms = until_ms - run._wall_ms()
    if left_ms <= 0:
        return
    if left_ms + run.margin_ms() < run.remaining_ms():
        yield ("sleep", left_ms / 1000)
        return
    run._step_records[path] = record
    run.wait_until_ms(until_ms, kind=kind, name=path)


def epoch_ms(when: datetime | float | int) -> int:
    """``sleep_until``'s ``when``: an aware datetime, or epoch seconds."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise LongrunError(
                f"run.sleep_until({when!r}): give an aware datetime (with a tzinfo, e.g. "
                "datetime.now(timezone.utc) + timedelta(hours=2)), not a naive one."
            )
        return int(when.timestamp() * 1000)
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return int(when * 1000)
    raise LongrunError(f"run.sleep_until({shown(when)}): give a datetime or epoch seconds.")
