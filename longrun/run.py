"""The run handle a decorated handler works with: ``current_run()``.

``run.iterate`` is the hot path. The context (the authority on the deadline) is consulted at
the first item and then at most every ``CHECK_INTERVAL_S`` of monotonic time, or after any
item that took longer. On the real clock a ticker thread raises the loop's ``due`` flag every
``CHECK_INTERVAL_S``, so an item costs a flag test and a position increment (over a list,
tuple, range or str, not even that: the iterator counts, see ``loops.position_probe``); on a
test clock (the simulator's virtual time) the clock is read after every item instead.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar, overload

from .errors import CursorKeyMissing, LongrunError, NotInRunError, shown
from .loops import (
    MISSING,
    SEEKABLE,
    Loop,
    as_saved,
    aunique_keys,
    chain_one,
    length_of,
    position_probe,
    unique_keys,
)
from .run_waits import SideObjects, WaitsMixin
from .timing import CHECK_INTERVAL_S, TICKER, Timer

__all__ = ["CHECK_INTERVAL_S", "EndHop", "Run", "current_run"]

T = TypeVar("T")

_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "longrun_current_run", default=None
)


def current_run() -> Run:
    """The run of the ``@longrun`` handler executing now (also inside helpers it calls)."""
    run = _current.get()
    if run is None:
        raise NotInRunError(
            "current_run() was called outside a @longrun-decorated handler. Call it from the "
            "handler (or code it calls in the same thread/task); in tests, invoke the handler "
            "through the longrun_sim fixture."
        )
    return run


class _Control(BaseException):
    """Stops user code at once. A BaseException so that ``except Exception`` does not eat it."""


class EndHop(_Control):
    """Raised by ``run.end_hop()`` and by ``run.iterate`` when time is short."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WaitHop(EndHop):
    """Raised by a sleep or a retry backoff longer than the hop has left: the hop ends, and
    the run waits (no compute) until ``until_ms``."""

    def __init__(self, until_ms: int | None, kind: str, name: str) -> None:
        super().__init__("wait")
        self.until_ms = until_ms
        self.kind = kind
        self.name = name


class Superseded(_Control):
    """This hop's checkpoint write lost its condition: another invocation owns the run."""


class Cancelled(_Control):
    """The run was cancelled while this hop was running."""


class Run(WaitsMixin):
    """One run of a long job, as seen from inside one hop.

    Attributes: ``id``, ``hop`` (0 for the first invocation), ``event`` (the original event,
    on every hop), ``state`` (a JSON-serialisable dict, saved at every checkpoint).
    """

    def __init__(
        self,
        *,
        run_id: str,
        hop: int,
        event: Any,
        state: dict[str, Any],
        cursors: dict[str, dict[str, Any]],
        timer: Timer,
        save: Callable[[], None] | None,
        checkpoint_every_s: float,
        run_deadline_mono: float | None,
        where: str,
        initial_state: Callable[[], Any] = dict,
        steps: Mapping[str, Mapping[str, Any]] | None = None,
        wall_ms: Callable[[], int] | None = None,
        side: SideObjects | None = None,
    ) -> None:
        self.id = run_id
        self.hop = hop
        self.event = event
        self.state = state
        self.where = where
        self._cursors = cursors
        self._timer = timer
        self._save = save
        """Writes a checkpoint of this run (a fenced write by the hop holding the claim)."""
        self._every = checkpoint_every_s
        self._run_deadline = run_deadline_mono
        self._stack: list[Loop] = []
        self._root_children = 0
        self._items_closed = 0
        now = timer.mono()
        self._hop_start = now
        self._steps = 0
        self._last_write = now
        self._tick = now
        # Read back only when a hop ends without items (the no-progress check), not at every
        # hop start: serialising a large state costs.
        self._initial_state = initial_state
        self.final_cursors: dict[str, dict[str, Any]] | None = None
        self.signal: _Control | None = None
        """The control signal this hop was given (end the hop, superseded, cancelled): a
        handler that catches it and returns anyway still ends its hop that way."""
        self._opened: set[str] = set()
        """Loop paths opened in their scope during this hop (a name used twice is an error)."""
        self._step_records: dict[str, dict[str, Any]] = {
            path: dict(record) for path, record in (steps or {}).items()
        }
        """``run.step`` results and ``run.sleep`` records by path (saved at every checkpoint)."""
        self._steps_used: set[tuple[str, tuple[int, ...]]] = set()
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._side = side

    def __repr__(self) -> str:
        return f"<Run {self.id} hop={self.hop} where={self.where}>"

    # -- time ---------------------------------------------------------------------------------

    def remaining_ms(self) -> int:
        """Milliseconds before this hop is killed, from the Lambda context."""
        return self._timer.remaining_ms()

    def margin_ms(self) -> int:
        """The margin in force: the hop yields when less than this remains."""
        return self._timer.margin_ms()

    def should_yield(self) -> bool:
        """True when this hop should stop starting new work and call ``end_hop()``.

        Outside ``run.iterate`` loops, the time between two calls is measured as one step,
        so a manual loop that asks once per step gets an adaptive margin too.
        """
        now = self._timer.mono()
        if not self._stack:
            self._timer.note_item(now - self._tick)
            self._tick = now
            # The time before the first call is set-up, not a step.
            self._timer.note_progress(self._steps, now - self._hop_start)
            self._steps += 1
        return self.signal is not None or self._timer.should_yield() or self._past_run_deadline(now)

    def end_hop(self, reason: str = "requested") -> NoReturn:
        """End this hop now: checkpoint, then continue the run in a new invocation."""
        if self.signal is not None:  # already ended (the handler caught the signal)
            raise self.signal
        self._freeze_cursors()
        self.signal = EndHop(reason)
        raise self.signal

    def _past_run_deadline(self, now: float) -> bool:
        return self._run_deadline is not None and now >= self._run_deadline

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Save ``state`` and every loop's position now (a fenced write)."""
        if self.signal is not None:  # the hop has ended: its progress is frozen
            raise self.signal
        if self._save is not None:
            try:
                self._save()
            except _Control as signal:  # superseded or cancelled: remember it, then stop
                self.signal = signal
                raise
        self._last_write = self._timer.mono()

    def cursors(self) -> dict[str, dict[str, Any]]:
        """Every loop's position as it would be saved now."""
        if self.final_cursors is not None:
            return self.final_cursors
        for loop in self._stack:
            if loop.children and loop.children_pos != loop.pos:
                self._drop_children(loop)  # loops of an item that has finished
        snapshot = dict(self._cursors)
        for loop in self._stack:
            snapshot[loop.path] = loop.cursor()
        return snapshot

    def _freeze_cursors(self) -> None:
        self.final_cursors = None
        self.final_cursors = self.cursors()

    def items_done(self) -> int:
        """Items finished by ``run.iterate`` loops in this hop."""
        return self._items_closed + sum(loop.pos - loop.start for loop in self._stack)

    def state_changed(self) -> bool:
        """Whether ``state`` differs from what this hop started with."""
        try:
            return _dumps(self.state) != _dumps(self._initial_state())
        except (TypeError, ValueError):
            return True

    def last_key(self, name: str) -> Any:
        """The key of the last finished item of the keyed loop ``name`` (``None`` if none).

        Use it to start a listing after that item (S3 ``StartAfter=``) and pass
        ``ordered=True`` to ``iterate`` so nothing is looked for before it.
        """
        saved = self._cursors.get(self._path_for(name))
        return None if saved is None else saved.get("key")

    # -- loops ----------------------------------------------------------------------------------

    def _path_for(self, name: str) -> str:
        parent = self._stack[-1] if self._stack else None
        return name if parent is None else f"{parent.path}/{name}"

    def _open_loop(
        self, name: str | None, key: Callable[[Any], Any] | None, ordered: bool
    ) -> tuple[Loop, dict[str, Any]]:
        if self.signal is not None:  # the hop has ended: no new loop starts
            raise self.signal
        # Validate before taking a loop number, so a rejected call shifts no default name.
        if key is not None and not callable(key):
            raise LongrunError(f"run.iterate(key={shown(key)}): key must be a function of an item.")
        if ordered and key is None:
            raise LongrunError("run.iterate(ordered=True) needs key=: order is judged on keys.")
        if name is not None and (
            not isinstance(name, str) or not name or "/" in name or name.startswith("#")
        ):
            raise LongrunError(
                f"run.iterate(name={shown(name)}): a loop name must be a non-empty string "
                "without '/' and not starting with '#'."
            )
        parent = self._stack[-1] if self._stack else None
        if parent is not None and parent.children and parent.children_pos != parent.pos:
            self._drop_children(parent)  # they ran in an item that has finished
        if name is not None:
            path = name if parent is None else f"{parent.path}/{name}"
            if any(loop.path == path for loop in self._stack):
                raise LongrunError(
                    f"run.iterate(name={shown(name)}) is already running in this scope; give "
                    "each nested loop its own name."
                )
            if path in self._opened:
                raise LongrunError(
                    f"run.iterate(name={shown(name)}) was already used in this scope: a second "
                    "loop with the same name would take over the first one's saved position "
                    "and skip its own items. Give each loop its own name (a name is scoped to "
                    "the item of the loop around it)."
                )
        if parent is None:
            ordinal = self._root_children
            self._root_children += 1
        else:
            ordinal = parent.children
            parent.children += 1
            parent.children_pos = parent.pos
        if name is None:
            name = f"#{ordinal}"
        path = name if parent is None else f"{parent.path}/{name}"
        self._opened.add(path)
        saved = self._cursors.get(path) or {}
        pos = saved.get("pos", 0)
        loop = Loop(path, pos if isinstance(pos, int) else 0, saved.get("key"), key)
        loop.done = bool(saved.get("done"))
        if ordered:
            saved = {**saved, "ordered": True}
        return loop, saved

    def _close_loop(self, loop: Loop) -> None:
        if self._stack and self._stack[-1] is loop:
            self._stack.pop()
        elif loop in self._stack:
            self._stack.remove(loop)
        self._items_closed += loop.pos - loop.start
        self._cursors[loop.path] = loop.cursor()
        if loop.done:
            self._drop_children(loop)

    def _drop_children(self, loop: Loop) -> None:
        prefix = loop.path + "/"
        for path in [p for p in self._cursors if p.startswith(prefix)]:
            del self._cursors[path]
        if self._opened:
            self._opened = {p for p in self._opened if not p.startswith(prefix)}
        loop.children = 0

    def _skip(self, loop: Loop, saved: dict[str, Any], iterable: Iterable[T]) -> Iterator[T]:
        """An iterator positioned after the items earlier hops finished."""
        iterator = iter(iterable)
        if loop.pos == 0 and "key" not in saved:
            return iterator
        if loop.key_fn is not None and saved.get("key") is not None:
            return self._skip_to_key(loop, iterator, saved["key"], saved.get("ordered", False))
        if type(iterator).__name__ in SEEKABLE:
            iterator.__setstate__(loop.pos)  # type: ignore[attr-defined]
            return iterator
        for _ in range(loop.pos):
            if next(iterator, MISSING) is MISSING:
                break
        return iterator

    def _skip_to_key(
        self, loop: Loop, iterator: Iterator[T], saved_key: Any, ordered: bool
    ) -> Iterator[T]:
        key_fn = loop.key_fn
        assert key_fn is not None
        for item in iterator:
            key = as_saved(key_fn(item))
            if ordered:
                if key > saved_key:
                    return chain_one(item, iterator)
            elif key == saved_key:
                return iterator
        if ordered:
            return iter(())
        raise self._key_missing(loop, saved_key)

    @staticmethod
    def _key_missing(loop: Loop, saved_key: Any) -> CursorKeyMissing:
        return CursorKeyMissing(
            f"run.iterate loop {shown(loop.path)}: the last finished item had key "
            f"{shown(saved_key)}, "
            "which is no longer in the iterable, so longrun cannot tell where to resume. Keep "
            "finished items in the listing, or pass ordered=True if keys come sorted (then "
            "resuming skips every key <= the saved one)."
        )

    @overload
    def iterate(
        self,
        iterable: Iterable[T],
        *,
        name: str | None = None,
        key: Callable[[T], Any] | None = None,
        ordered: bool = False,
    ) -> Iterator[T]: ...

    @overload
    def iterate(
        self,
        iterable: AsyncIterable[T],
        *,
        name: str | None = None,
        key: Callable[[T], Any] | None = None,
        ordered: bool = False,
    ) -> AsyncIterator[T]: ...

    def iterate(
        self,
        iterable: Iterable[T] | AsyncIterable[T],
        *,
        name: str | None = None,
        key: Callable[[T], Any] | None = None,
        ordered: bool = False,
    ) -> Iterator[T] | AsyncIterator[T]:
        """Yield the items of ``iterable`` that earlier hops did not finish.

        An item is finished when the loop body asks for the next one. Between items this
        checkpoints every ``checkpoint_every_s`` and ends the hop when time is short.

        * Position-based by default: the iterable must yield the same sequence on every hop.
        * ``key=fn``: records ``fn(item)`` of the last finished item and resumes after the
          item with that key (``CursorKeyMissing`` if it is gone). With ``ordered=True`` keys
          ascend, every item with a key <= the saved one is skipped, and a listing may start
          after ``run.last_key(name)`` (S3 ``StartAfter``).
        * ``name``: the loop's identity within its enclosing loop item (default: the order of
          ``iterate`` calls). Give names when the order of loops can differ between hops.
        """
        if key is None and isinstance(iterable, (set, frozenset)):
            raise LongrunError(
                f"run.iterate(name={shown(name)}) over a {type(iterable).__name__}: a set's "
                "order changes from one process to the next (hash randomisation), so a "
                "position saved by one hop points at another item in the next, and items run "
                "twice or never. Iterate over sorted(...) of it, or pass key= (a unique key "
                "per item)."
            )
        loop, saved = self._open_loop(name, key, ordered)
        loop.total = length_of(iterable)
        if hasattr(iterable, "__aiter__") and not hasattr(iterable, "__iter__"):
            if key is not None:
                iterable = aunique_keys(loop, iterable, key, ordered)
            return self._aloop(loop, saved, iterable)
        if key is not None:
            iterable = unique_keys(loop, iterable, key, ordered)  # type: ignore[arg-type]
        return self._loop(loop, saved, iterable)  # type: ignore[arg-type]

    def _between(self, loop: Loop, now: float) -> None:
        """The bookkeeping between two items: yield if time is short, checkpoint if due."""
        timer = self._timer
        timer.note_progress(self.items_done(), now - self._hop_start)
        if timer.remaining_ms() < timer.margin_ms():
            self.end_hop("time")
        if self._past_run_deadline(now):
            self.end_hop("max_run_seconds")
        if now - self._last_write >= self._every:
            self.checkpoint()

    @contextmanager
    def _looping(self, loop: Loop) -> Iterator[None]:
        self._stack.append(loop)
        try:
            yield
        finally:
            self._close_loop(loop)

    def _loop(self, loop: Loop, saved: dict[str, Any], iterable: Iterable[T]) -> Iterator[T]:
        if self._timer.mono is time.perf_counter:
            return self._ticked_loop(loop, saved, iterable)
        return self._timed_loop(loop, saved, iterable)

    def _ticked_loop(self, loop: Loop, saved: dict[str, Any], iterable: Iterable[T]) -> Iterator[T]:
        """The loop on the real clock: the ticker raises ``loop.due`` every CHECK_INTERVAL_S,
        and the clock is read only then. The stretch since the last check bounds every item
        in it, so it is what the longest item is measured by (an overestimate by at most a
        tick for fast items, exact for an item that spans a tick).

        Over a list, tuple, range or str the iterator counts its position itself, and
        ``loop.pos`` reads it from there while the loop runs (``probe``): an item then costs
        a flag test, not also an int made to count it."""
        with self._looping(loop):
            if loop.done:
                return
            iterator = self._skip(loop, saved, iterable)
            probe = position_probe(iterator, loop.pos)
            TICKER.add(loop)
            try:
                # The time check runs once the next item is in hand: a loop whose last item
                # is done completes instead of ending the hop for nothing.
                if probe is None:
                    for item in iterator:
                        if loop.due:
                            self._check_ticked(loop)
                        yield item
                        loop.pos += 1
                else:
                    for item in iterator:
                        if loop.due:  # (the first item always: ``due`` starts raised)
                            loop.probe = probe  # (an item is in hand from here on)
                            self._check_ticked(loop)
                        yield item
                    loop.probe = None
                    loop.pos = max(loop.pos, probe(exhausted=True))
                loop.done = True
            finally:
                if loop.probe is not None:  # stopped with an item in hand
                    loop.pos = loop.probe()
                    loop.probe = None
                TICKER.discard(loop)

    def _check_ticked(self, loop: Loop) -> None:
        """A ticked loop's check, with an item in hand: time its stretch of items, then
        :meth:`_between`. ``loop.last_check`` holds the clock and position of the last."""
        loop.due = False
        timer = self._timer
        now = timer.mono()
        pos = loop.pos
        since = loop.last_check
        if since is not None:
            prev, checked = since
            # (nested loops timed their own items)
            if pos > checked and not loop.children and now - prev > timer.longest_item_s:
                timer.longest_item_s = now - prev
        loop.last_check = (now, pos)
        self._between(loop, now)

    def _timed_loop(self, loop: Loop, saved: dict[str, Any], iterable: Iterable[T]) -> Iterator[T]:
        """The loop on a test clock: the clock is read after every item."""
        with self._looping(loop):
            if loop.done:
                return
            iterator = self._skip(loop, saved, iterable)
            timer = self._timer
            mono = timer.mono
            prev = mono()
            next_check = prev
            for item in iterator:
                if prev >= next_check:
                    self._between(loop, prev)
                    next_check = prev + CHECK_INTERVAL_S
                yield item
                loop.pos += 1
                now = mono()
                if now - prev > timer.longest_item_s and not loop.children:
                    timer.longest_item_s = now - prev  # (nested loops timed their own items)
                prev = now
            loop.done = True

    async def _aloop(
        self, loop: Loop, saved: dict[str, Any], iterable: AsyncIterable[T]
    ) -> AsyncIterator[T]:
        self._stack.append(loop)
        try:
            if loop.done:
                return
            iterator = iterable.__aiter__()
            pending: list[T] = []
            if loop.key_fn is not None and saved.get("key") is not None:
                await self._askip_to_key(loop, iterator, saved, pending)
            else:
                for _ in range(loop.pos):
                    try:
                        await iterator.__anext__()
                    except StopAsyncIteration:
                        break
            timer = self._timer
            prev = timer.mono()
            next_check = prev
            due = True
            while True:
                if pending:
                    item = pending.pop()
                else:
                    try:
                        item = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                if due:
                    self._between(loop, prev)
                    next_check = prev + CHECK_INTERVAL_S
                yield item
                loop.pos += 1
                now = timer.mono()
                if loop.children:
                    self._drop_children(loop)
                else:
                    timer.note_item(now - prev)
                prev = now
                due = now >= next_check
            loop.done = True
        finally:
            self._close_loop(loop)

    async def _askip_to_key(
        self, loop: Loop, iterator: AsyncIterator[T], saved: dict[str, Any], pending: list[T]
    ) -> None:
        """Advance ``iterator`` past the saved key; an ordered skip leaves one item pending."""
        key_fn = loop.key_fn
        assert key_fn is not None
        saved_key, ordered = saved["key"], saved.get("ordered", False)
        async for item in iterator:
            key = as_saved(key_fn(item))
            if ordered and key > saved_key:
                pending.append(item)
                return
            if not ordered and key == saved_key:
                return
        if not ordered:
            raise self._key_missing(loop, saved_key)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _activate(run: Run | None) -> contextvars.Token[Run | None]:
    return _current.set(run)


def _deactivate(token: contextvars.Token[Run | None]) -> None:
    _current.reset(token)
