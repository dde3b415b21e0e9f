"""``run.map``: a run fans out over child runs (invocations of a function, each a longrun run
of its own) and joins their results, with no compute while it waits.

The parent's first ``run.map(name, items, ...)``:

1. stores the items as side objects, ``CHUNK`` to an object
   (``{run}/map/{digest}/items/{k}.json``), and checkpoints a ``map`` record (so the items
   are fixed before any child exists);
2. creates the **join record** ``{run}/map/{digest}/join.json`` (create-if-absent);
3. invokes the first ``max_concurrency`` children asynchronously, each with a small start
   event naming the parent, the map and the item's index (``{"longrun_child": {...}}``);
4. ends its hop ``waiting`` (kind ``map``). After that write it reads the join record once
   more and wakes itself if every child finished meanwhile.

A child's run id is derived from the parent's, the map's and the index
(:func:`child_run_id`), so a retried parent, a duplicate start or a re-sent launch never makes
a second child: the child's first write is create-if-absent. The child reads its item from
the store and runs as any run does (it may hop, wait, escalate).

When a child settles it joins, through the join record (:mod:`longrun.join`): the child
whose conditional write completes the count wakes the parent.

The parent's next hop finds the join complete and returns a :class:`MapResults`, a sequence
in item order whose items are read lazily from the children's checkpoints. Failed children
beyond ``tolerated_failures`` / ``tolerated_failure_ratio`` raise :class:`MapFailed`, naming
them. Cancelling the parent (``store.cancel``) marks the join cancelled (no more children are
started) and cancels every child started, writing a cancelled record for one that has not
begun yet.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from .checkpoint import is_plain_json
from .errors import LongrunError, shown
from .join import (
    CHUNK,
    MAX_ITEMS,
    child_run_id,
    chunk_name,
    create_join,
    join_name,
    launch,
    make_child_event,
    map_digest,
    read_join,
    unfinished,
)

if TYPE_CHECKING:
    from .run import Run
    from .stores.base import CheckpointStore

__all__ = [
    "MapFailed",
    "MapResults",
    "child_run_id",
    "join_name",
    "make_child_event",
    "map_digest",
    "run_map",
]


class MapFailed(LongrunError):
    """``run.map``: more children failed than tolerated. ``failed``: their indices."""

    def __init__(self, message: str, failed: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.failed = list(failed)


# -- the parent -------------------------------------------------------------------------------


def run_map(
    run: Run,
    name: str,
    items: Iterable[Any],
    *,
    max_concurrency: int,
    tolerated_failures: int | None,
    tolerated_failure_ratio: float | None,
    function: str | None,
) -> MapResults:
    """``run.map``: see the module docstring."""
    from .steps import _record

    if run.signal is not None:
        raise run.signal
    _check_options(name, max_concurrency, tolerated_failures, tolerated_failure_ratio, function)
    if run._side is None:
        raise LongrunError(f"run.map({name!r}) needs the run's store (it is not in a run hop).")
    store = run._side.store
    path, scope, record = _record(run, "map", name)
    join = None
    if record is None or record.get("kind") != "map":
        record, join = _start(run, store, path, scope, items, max_concurrency, function)
    if record["state"] == "done":
        return _results(store, record, name, run.id, tolerated_failures, tolerated_failure_ratio)
    if join is None:
        join = read_join(store, run.id, str(record["map"]))
    if join is None:
        join = _create_join(run, store, path, record)
    if join.get("cancelled"):
        raise LongrunError(f"run.map({name!r}): the map was cancelled.")
    if join["ok"] + len(join["failed"]) >= join["n"]:
        record = {**record, "state": "done", "failed": sorted(join["failed"])}
        run._step_records[path] = record
        run.checkpoint()
        return _results(store, record, name, run.id, tolerated_failures, tolerated_failure_ratio)
    # The first call, a retry of it, a resume: (re)start every started child not finished
    # (a start is idempotent; at most max_concurrency of them).
    launch(store, join, unfinished(join))
    run.wait_until_ms(None, kind="map", name=path)


def _check_options(
    name: str,
    limit: object,
    tolerated: object,
    ratio: object,
    function: object,
) -> None:
    where = f"run.map({name!r}, ...)"
    if type(limit) is not int or limit < 1:
        raise LongrunError(f"{where}: max_concurrency={shown(limit)}: give a whole number >= 1.")
    if tolerated is not None and (type(tolerated) is not int or tolerated < 0):
        raise LongrunError(
            f"{where}: tolerated_failures={shown(tolerated)}: give a whole number >= 0."
        )
    if ratio is not None and not (
        isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 <= ratio <= 1
    ):
        raise LongrunError(
            f"{where}: tolerated_failure_ratio={shown(ratio)}: give a number from 0 to 1."
        )
    if function is not None and not (isinstance(function, str) and function):
        raise LongrunError(f"{where}: function={shown(function)}: give a function name or ARN.")


def _start(
    run: Run,
    store: CheckpointStore,
    path: str,
    scope: list[int],
    items: Iterable[Any],
    limit: int,
    function: str | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Store the items, checkpoint the map's record and create its join record (the caller
    starts the first children). Returns the record and the join record (none for no items)."""
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
        raise LongrunError(
            f"run.map({path!r}): items must be a list (or iterable) of child events, not a "
            f"{type(items).__name__}."
        )
    listed = list(items)
    if len(listed) > MAX_ITEMS:
        raise LongrunError(f"run.map({path!r}): {len(listed)} items; at most {MAX_ITEMS}.")
    for index, item in enumerate(listed):
        if not is_plain_json(item):
            raise LongrunError(
                f"run.map({path!r}): item {index} ({shown(item, 80)}) is not plain JSON; each "
                "item is a child run's event (dict with str keys, list, str, number, bool, None)."
            )
    digest = map_digest(run.id, path, scope)
    side = run._side
    target = function or (None if side is None else side.function)
    if listed and not target:
        raise LongrunError(
            f"run.map({path!r}): no function to invoke the children in: the context has no "
            "invoked_function_arn. Run the handler in Lambda, through the longrun_sim fixture, "
            "or pass function=."
        )
    record: dict[str, Any] = {
        "state": "started" if listed else "done",
        "kind": "map",
        "scope": scope,
        "map": digest,
        "n": len(listed),
        "max": limit,
        "function": target,
    }
    for k in range(0, len(listed), CHUNK):
        data = json.dumps(listed[k : k + CHUNK], separators=(",", ":")).encode()
        store.put_object(chunk_name(run.id, digest, k // CHUNK), data)
    if listed:
        record["failed"] = []
    run._step_records[path] = record
    run.checkpoint()  # the items are fixed before any child exists
    return record, _create_join(run, store, path, record) if listed else None


def _create_join(
    run: Run, store: CheckpointStore, path: str, record: dict[str, Any]
) -> dict[str, Any]:
    tenant = None if run._side is None else run._side.tenant_id
    return create_join(
        store, run.id, path, str(record["map"]), int(record["n"]), int(record["max"]),
        str(record["function"]), tenant,
    )  # fmt: skip


def join_complete(run: Run, path: str) -> bool:
    """Whether every child of the map at ``path`` has finished (after the waiting write)."""
    record = run._step_records.get(path) or {}
    if run._side is None or "map" not in record:
        return False
    join = read_join(run._side.store, run.id, str(record["map"]))
    return join is not None and join["ok"] + len(join["failed"]) >= join["n"]


def _results(
    store: CheckpointStore,
    record: dict[str, Any],
    name: str,
    parent_id: str,
    tolerated: int | None,
    ratio: float | None,
) -> MapResults:
    results = MapResults(store, record, parent_id)
    failed = results.failed
    n = len(results)
    if failed:
        allowed = 0 if tolerated is None and ratio is None else n
        if tolerated is not None:
            allowed = min(allowed, int(tolerated))
        if ratio is not None:
            allowed = min(allowed, int(float(ratio) * n))
        if len(failed) > allowed:
            shown_ids = ", ".join(f"{i} ({results.run_id(i)})" for i in failed[:10]) + (
                f" and {len(failed) - 10} more" if len(failed) > 10 else ""
            )
            raise MapFailed(
                f"run.map({name!r}): {len(failed)} of {n} children failed, more than the "
                f"{allowed} tolerated: {shown_ids}. `longrun status CHILD_RUN_ID` shows why; "
                "raise tolerated_failures / tolerated_failure_ratio to go on without them.",
                failed,
            )
    return results


class MapResults(Sequence[Any]):
    """The children's results in item order, each read from its child's checkpoint when it
    is asked for; the last ``KEPT`` read are kept, so going over 100,000 results holds a few
    at a time. A failed child's result is ``None``; ``failed`` lists them."""

    KEPT = 128

    def __init__(self, store: CheckpointStore, record: dict[str, Any], parent_id: str) -> None:
        self._store = store
        self._record = record
        self._parent = parent_id
        self._failed = frozenset(int(i) for i in record.get("failed", []))
        self._cache: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return int(self._record["n"])

    @property
    def failed(self) -> list[int]:
        """Indices of the children that failed."""
        return sorted(self._failed)

    def run_id(self, index: int) -> str:
        """The run id of child ``index``."""
        return child_run_id(self._parent, str(self._record["map"]), index)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"map result {index} out of range ({n} items)")
        cache = self._cache
        if index in cache:
            cache.move_to_end(index)
            return cache[index]
        result = cache[index] = self._load(index)
        if len(cache) > self.KEPT:
            cache.popitem(last=False)
        return result

    def __iter__(self) -> Iterator[Any]:
        for index in range(len(self)):
            yield self[index]

    def _load(self, index: int) -> Any:
        if index in self._failed:
            return None
        run_id = self.run_id(index)
        loaded = self._store.load(run_id)
        if loaded is None:
            raise LongrunError(
                f"the result of map child {index} is gone: run {run_id} is not in "
                f"{self._store.describe()} (deleted by `longrun gc`?)."
            )
        return loaded.checkpoint.result
