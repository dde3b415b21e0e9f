"""The positions of ``run.iterate`` loops: the live loop (:class:`Loop`), and the helpers
that place an iterator where earlier hops left it and check a keyed loop's keys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

from .errors import LongrunError, shown

T = TypeVar("T")


class Loop:
    """One open ``run.iterate`` loop of a hop: where it is, and what its checks need."""

    __slots__ = (
        "_pos",
        "children",
        "children_pos",
        "done",
        "due",
        "in_hand",
        "key",
        "key_fn",
        "last",
        "last_check",
        "path",
        "probe",
        "start",
        "total",
    )

    def __init__(self, path: str, pos: int, key: Any, key_fn: Callable[[Any], Any] | None) -> None:
        self.path = path
        self._pos = pos
        self.last_check: tuple[float, int] | None = None
        """A ticked loop's last check: the clock and ``pos`` then."""
        self.probe: Callable[[], int] | None = None
        """While a loop over a list, tuple, range or str runs: its position, read from the
        iterator, which counts anyway (see ``Run._ticked_loop``)."""
        self.start = pos
        self.key = key
        self.key_fn = key_fn
        self.last: Any = None
        """A keyed loop's item before ``in_hand``: the last finished one while the loop runs."""
        self.in_hand: Any = None
        """A keyed loop's latest item from its iterable (set by its key check)."""
        self.done = False
        self.total: int | None = None
        """The iterable's length, when it has one (shown as a progress bar's end)."""
        self.due = True
        """Time to look at the clock (raised by the ticker; first item: at once)."""
        self.children = 0
        """Loops opened inside the current item (their ordinal names count from 0)."""
        self.children_pos = pos
        """``pos`` when those loops were opened: once it moved on, they belong to a
        finished item and are dropped (lazily: when the next item opens one, or when
        cursors are taken)."""

    @property
    def pos(self) -> int:
        """How many items of the iterable are finished (the item in hand is not)."""
        probe = self.probe
        return self._pos if probe is None else probe()

    @pos.setter
    def pos(self, value: int) -> None:
        self._pos = value

    def cursor(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"pos": self.pos, "done": self.done}
        if self.key_fn is not None:
            # ``last`` is set in this hop once an item finished here (pos moved past start).
            # An item is finished once the next is asked for; when the loop is done, the last
            # item taken is finished too.
            last = self.in_hand if self.done else self.last
            entry["key"] = self.key_fn(last) if self.pos > self.start else self.key
        if self.total is not None:
            entry["total"] = self.total
        return entry


SEEKABLE = frozenset({"list_iterator", "tuple_iterator", "range_iterator", "str_ascii_iterator"})


def position_probe(iterator: Iterator[Any], start: int) -> Callable[..., int] | None:
    """For an iterator over a list, tuple, range or str positioned at ``start``: a function
    that gives the loop's position from the iterator's own count (a list iterator's index,
    what is left of a tuple, range or str), while an item is in hand (that item is not
    finished) or, with
    ``exhausted=True``, once the iterator ran out. ``None`` for any other iterator."""
    kind = type(iterator).__name__
    if kind not in SEEKABLE:
        return None
    if kind == "list_iterator":
        # A list can change size as it is walked, even shrink below the position: read the
        # iterator's index itself (``__reduce__`` holds it until the iterator runs out).
        reduce: Callable[[], tuple[Any, ...]] = iterator.__reduce__  # type: ignore[assignment]
        seq = reduce()[1][0]
        taken = [start]  # the most items seen taken: a floor once the iterator runs out

        def in_list(exhausted: bool = False) -> int:
            state = reduce()
            if len(state) > 2:
                index: int = state[2]
                taken[0] = max(taken[0], index)
                return index if exhausted else index - 1
            # Ran out, which drops the index: it was the list's length then, unless the list
            # shrank below it (then no less than any position read while it ran).
            return max(taken[0], len(seq))

        return in_list
    left = iterator.__length_hint__  # type: ignore[attr-defined]
    end = start + left()  # (tuples, ranges and strs never change)

    def in_sequence(exhausted: bool = False) -> int:
        index: int = end - left()
        return index if exhausted else index - 1

    return in_sequence


MISSING = object()


def unique_keys(
    loop: Loop, iterable: Iterable[T], key_fn: Callable[[T], Any], ordered: bool
) -> Iterator[T]:
    """``iterable``, checking that a keyed loop's keys are unique (ascending if ``ordered``).

    A keyed loop resumes after the item whose key was saved last: with a repeated key it
    would resume after the wrong copy and run items again. The check covers the items
    skipped on resume too, so it fails the same way on every hop.
    """
    check = KeyCheck(loop, key_fn, ordered)
    for item in iterable:
        check(item)
        yield item


async def aunique_keys(
    loop: Loop, iterable: AsyncIterable[T], key_fn: Callable[[T], Any], ordered: bool
) -> AsyncIterator[T]:
    """:func:`unique_keys` for an async iterable."""
    check = KeyCheck(loop, key_fn, ordered)
    async for item in iterable:
        check(item)
        yield item


class KeyCheck:
    """Raises LongrunError at the first repeated key (or, ordered, one not ascending)."""

    def __init__(self, loop: Loop, key_fn: Callable[[Any], Any], ordered: bool) -> None:
        self.loop, self.key_fn, self.ordered = loop, key_fn, ordered
        self.seen: set[Any] = set()
        self.previous: Any = MISSING
        self.index = -1

    def __call__(self, item: Any) -> None:
        self.loop.last, self.loop.in_hand = self.loop.in_hand, item
        self.index += 1
        index, loop, previous, seen = self.index, self.loop, self.previous, self.seen
        token = as_saved(self.key_fn(item))
        if self.ordered:
            if previous is not MISSING and not token > previous:
                raise LongrunError(
                    f"run.iterate loop {shown(loop.path)} (ordered=True): the key "
                    f"{shown(token)} of item {index} does not come after {shown(previous)}. "
                    "Ordered keys must ascend strictly (no repeats): sort the listing, or "
                    "drop ordered=True."
                )
            self.previous = token
        else:
            hashable = token if isinstance(token, (str, int, float, bool)) else repr(token)
            if hashable in seen:
                raise LongrunError(
                    f"run.iterate loop {shown(loop.path)}: the key {shown(token)} appears "
                    f"again at item {index}. A keyed loop resumes after the last finished "
                    "item's key, so with repeated keys it would resume after the wrong copy "
                    "and run items twice. Make keys unique (add the position or a version "
                    "to the key), or drop key= if the iterable is the same on every hop."
                )
            seen.add(hashable)


def chain_one(first: T, rest: Iterator[T]) -> Iterator[T]:
    yield first
    yield from rest


def as_saved(key: Any) -> Any:
    """A key as it comes back from the checkpoint (tuples become lists), for comparison."""
    return json.loads(json.dumps(key)) if isinstance(key, (tuple, list, dict)) else key


def length_of(iterable: object) -> int | None:
    """``len(iterable)`` when it has a length (a list, a range), else ``None``."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except Exception:  # no __len__, or one that fails: a progress bar without an end
        return None
