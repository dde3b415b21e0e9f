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

When a child **settles** (completed, or failed for good: a terminal error, a failure outside
Lambda, or its ``LONGRUN_CHILD_ATTEMPTS``-th attempt at a hop), it joins: one conditional
write of the join record sets its bit, counts it, and assigns it the next pending child to
start (``launch``: ``{index: by}``). It then invokes that child and clears the assignment with
a second conditional write. The child whose write made the count reach the number of items is
recorded as ``woken_by`` and wakes the parent (an invoke of the parent's next hop, if the
parent waits for this map). Every step is idempotent and redone by Lambda's retry of the
child's invocation, which finds its run settled and its join owed (a duplicate delivery of a
settled child does the same): a set bit is never counted twice, an assignment left by a dead
invocation is re-sent, the wake-up is re-sent.

The parent's next hop finds the join complete and returns a :class:`MapResults`, a sequence
in item order whose items are read lazily from the children's checkpoints. Failed children
beyond ``tolerated_failures`` / ``tolerated_failure_ratio`` raise :class:`MapFailed`, naming
them. Cancelling the parent (``store.cancel``) marks the join cancelled (no more children are
started) and cancels every child started, writing a cancelled record for one that has not
begun yet.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from .checkpoint import ENVELOPE_VERSION, is_plain_json, make_envelope, validate_run_id
from .errors import EnvelopeError, LongrunConfigError, LongrunError, StoreError, shown

if TYPE_CHECKING:
    from .protocol import Checkpoint
    from .run import Run
    from .stores.base import CheckpointStore

__all__ = [
    "CHILD_KEY",
    "CHUNK",
    "MapFailed",
    "MapResults",
    "child_run_id",
    "parse_child_event",
]

log = logging.getLogger("longrun")

CHILD_KEY = "longrun_child"
"""The key of a child run's start event: ``{"longrun_child": {"v", "parent", "map", "index"}}``."""
CHUNK = 1000
"""Items per side object."""
MAX_ITEMS = 1_000_000
ENV_CHILD_ATTEMPTS = "LONGRUN_CHILD_ATTEMPTS"
DEFAULT_CHILD_ATTEMPTS = 3
"""Lambda's default for an async invocation: the first attempt and two retries."""
JOIN_ATTEMPTS = 200


class MapFailed(LongrunError):
    """``run.map``: more children failed than tolerated. ``failed``: their indices."""

    def __init__(self, message: str, failed: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.failed = list(failed)


# -- names ------------------------------------------------------------------------------------


def map_digest(parent_id: str, path: str, scope: Sequence[int] = ()) -> str:
    """The map's identity: its run, its path and the positions of the loops around it (the
    same name in the next loop item is another map)."""
    where = f"{path}\0{','.join(map(str, scope))}" if scope else path
    return hashlib.sha256(f"{parent_id}\0{where}".encode()).hexdigest()[:12]


def child_run_id(parent_id: str, digest: str, index: int) -> str:
    """The run id of child ``index`` of map ``digest`` of run ``parent_id`` (at most 110
    characters: the parent's id is cut to 90, the digest keeps it unique)."""
    return f"{parent_id[:90]}.{digest}.{index}"


def _folder(parent_id: str, digest: str) -> str:
    return f"{parent_id}/map/{digest}"


def join_name(parent_id: str, digest: str) -> str:
    return f"{_folder(parent_id, digest)}/join.json"


def _chunk_name(parent_id: str, digest: str, k: int) -> str:
    return f"{_folder(parent_id, digest)}/items/{k}.json"


def make_child_event(parent_id: str, digest: str, index: int) -> dict[str, Any]:
    body = {"v": ENVELOPE_VERSION, "parent": parent_id, "map": digest, "index": index}
    return {CHILD_KEY: body}


def parse_child_event(event: object) -> tuple[str, str, int] | None:
    """``(parent run id, map digest, index)`` of a child's start event; ``None`` for any
    other event; EnvelopeError for a malformed one."""
    if not isinstance(event, dict) or CHILD_KEY not in event:
        return None
    body = event[CHILD_KEY]
    ok = (
        len(event) == 1
        and isinstance(body, dict)
        and set(body) == {"v", "parent", "map", "index"}
        and body["v"] == ENVELOPE_VERSION
        and isinstance(body["map"], str)
        and len(body["map"]) == 12
        and all(c in "0123456789abcdef" for c in body["map"])
        and type(body["index"]) is int
        and 0 <= body["index"] < MAX_ITEMS
    )
    if not ok:
        raise EnvelopeError(
            f"event {shown(event)} has a top-level {CHILD_KEY!r} key but is not a longrun "
            f'child start event (expected {{"{CHILD_KEY}": {{"v": 1, "parent": RUN_ID, '
            '"map": DIGEST, "index": N}} and nothing else). The key is reserved: rename it '
            "in your event."
        )
    parent = validate_run_id(body["parent"], source="the child event's parent")
    return parent, body["map"], body["index"]


def child_attempts() -> int:
    raw = os.environ.get(ENV_CHILD_ATTEMPTS, "").strip()
    if not raw:
        return DEFAULT_CHILD_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise LongrunConfigError(
            f"{ENV_CHILD_ATTEMPTS}={shown(raw, 40)} is not a whole number >= 1: set it to your "
            "function's MaximumRetryAttempts + 1 (Lambda's default is 3)."
        )
    return int(raw)


# -- the join record --------------------------------------------------------------------------


def _encode(doc: dict[str, Any]) -> bytes:
    ordered = {"format": 1, "seq": doc["seq"], **{k: v for k, v in doc.items() if k != "seq"}}
    ordered["format"] = 1
    return json.dumps(ordered, separators=(",", ":")).encode()


def _decode_join(data: bytes, name: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    fields = {"seq", "parent", "path", "map", "n", "started", "base", "done", "ok", "failed"}
    fields.add("launch")
    if (
        not isinstance(doc, dict)
        or not fields <= doc.keys()
        or doc.get("kind") != "join"
        or not all(type(doc[k]) is int and doc[k] >= 0 for k in ("n", "started", "base", "ok"))
        or not isinstance(doc["done"], str)
        or not isinstance(doc["failed"], list)
        or not isinstance(doc["launch"], dict)
    ):
        raise LongrunError(
            f"the join record {name} is not one longrun wrote ({shown(data[:80])}): edited "
            "by hand? Restore it from the children's checkpoints or cancel the run."
        )
    return doc


def _bits(doc: dict[str, Any]) -> int:
    """The finished children from ``base`` on, bit ``k`` for child ``base + k`` (every child
    below ``base`` finished): a record as small as the window of unfinished children."""
    return int.from_bytes(base64.b64decode(doc["done"]), "little")


def _bit(doc: dict[str, Any], index: int) -> bool:
    base = int(doc["base"])
    return index < base or bool(_bits(doc) >> (index - base) & 1)


def _set_bit(doc: dict[str, Any], index: int) -> None:
    bits = _bits(doc) | 1 << (index - int(doc["base"]))
    ones = (~bits & (bits + 1)).bit_length() - 1  # the finished children at the bottom
    bits >>= ones
    doc["base"] = int(doc["base"]) + ones
    doc["done"] = base64.b64encode(bits.to_bytes((bits.bit_length() + 7) // 8, "little")).decode()


def _new_join(
    parent_id: str, path: str, digest: str, n: int, limit: int, function: str, tenant: Any
) -> dict[str, Any]:
    return {
        "seq": 1,
        "kind": "join",
        "parent": parent_id,
        "path": path,
        "map": digest,
        "n": n,
        "max": limit,
        "function": function,
        "tenant": tenant,
        "started": min(limit, n),
        "base": 0,
        "done": "",
        "ok": 0,
        "failed": [],
        "launch": {},
        "woken_by": None,
        "cancelled": False,
    }


def read_join(store: CheckpointStore, parent_id: str, digest: str) -> dict[str, Any] | None:
    name = join_name(parent_id, digest)
    data = store.read_object(name)
    return None if data is None else _decode_join(data, name)


def _update(
    store: CheckpointStore, name: str, change: Any, what: str
) -> tuple[dict[str, Any], bool] | None:
    """Apply ``change(doc) -> bool`` (False: nothing to write) with a conditional write,
    again on a conflict; ``(doc as written or found, whether written)``, ``None`` if the
    record is gone."""
    for attempt in range(JOIN_ATTEMPTS):
        found = store.read_object_token(name)
        if found is None:
            return None
        data, token = found
        doc = _decode_join(data, name)
        if not change(doc):
            return doc, False
        doc["seq"] = int(doc["seq"]) + 1
        if store.replace_object(name, _encode(doc), token):
            return doc, True
        time.sleep(random.uniform(0, min(0.5, 0.01 * (attempt + 1))))
    raise StoreError(
        f"{what}: the join record {name} kept changing under {JOIN_ATTEMPTS} attempts; "
        "the retry of this invocation tries again."
    )


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
    side = run._side
    store = None if side is None else side.store
    if side is None or store is None:
        raise LongrunError(f"run.map({name!r}) needs the run's store (it is not in a run hop).")
    path, scope, record = _record(run, "map", name)
    if record is None or record.get("kind") != "map":
        record = _start(run, store, path, scope, items, max_concurrency, function)
    digest = str(record["map"])
    if record["state"] == "done":
        return _results(store, record, name, run.id, tolerated_failures, tolerated_failure_ratio)
    join = read_join(store, run.id, digest)
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
    _launch(store, join, _unfinished(join))
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
) -> dict[str, Any]:
    """Store the items, checkpoint the map's record, create its join record, start the
    first children. Returns the record."""
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
        store.put_object(_chunk_name(run.id, digest, k // CHUNK), data)
    if listed:
        record["failed"] = []
    run._step_records[path] = record
    run.checkpoint()  # the items are fixed before any child exists
    if listed:
        _create_join(run, store, path, record)
    return record


def _create_join(
    run: Run, store: CheckpointStore, path: str, record: dict[str, Any]
) -> dict[str, Any]:
    digest = str(record["map"])
    doc = _new_join(
        run.id, path, digest, int(record["n"]), int(record["max"]), str(record["function"]),
        None if run._side is None else run._side.tenant_id,
    )  # fmt: skip
    name = join_name(run.id, digest)
    if not store.create_object(name, _encode(doc)):
        found = read_join(store, run.id, digest)
        if found is not None:
            return found
    return doc


def _launch(store: CheckpointStore, join: dict[str, Any], indices: Iterable[int]) -> None:
    """Invoke the children at ``indices`` (each start is idempotent), several at once."""
    from .ports import active

    payloads = [
        json.dumps(make_child_event(join["parent"], join["map"], index)).encode()
        for index in indices
    ]
    try:
        active().transport.invoke_many(
            str(join["function"]), payloads, tenant_id=join.get("tenant")
        )
    except Exception as exc:
        from .caller import _error_code
        from .errors import RecursionStopped

        if _error_code(exc) != "RecursiveInvocationException":
            raise
        raise RecursionStopped(
            f"AWS recursive loop detection refused to start children of run {join['parent']} "
            f"in {join['function']}: children start children, a chain of invocations of one "
            "function. Allow recursion for it (aws lambda put-function-recursion-config "
            f"--recursive-loop Allow); then `longrun resume {join['parent']}` starts the "
            "children again."
        ) from exc


def _unfinished(join: dict[str, Any]) -> list[int]:
    """Indices of the children started and not finished."""
    base, bits = int(join["base"]), _bits(join)
    return [i for i in range(base, int(join["started"])) if not bits >> (i - base) & 1]


def join_complete(run: Run, path: str) -> bool:
    """Whether every child of the map at ``path`` has finished (after the waiting write)."""
    record = run._step_records.get(path) or {}
    if run._side is None or run._side.store is None or "map" not in record:
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
    is asked for (and kept). A failed child's result is ``None``; ``failed`` lists them."""

    def __init__(self, store: CheckpointStore, record: dict[str, Any], parent_id: str) -> None:
        self._store = store
        self._record = record
        self._parent = parent_id
        self._failed = frozenset(int(i) for i in record.get("failed", []))
        self._cache: dict[int, Any] = {}

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
        if index not in self._cache:
            self._cache[index] = self._load(index)
        return self._cache[index]

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


# -- the children -----------------------------------------------------------------------------


def child_item(store: CheckpointStore, parent_id: str, digest: str, index: int) -> Any:
    """The event of child ``index``: its item, from the parent's side objects."""
    name = _chunk_name(parent_id, digest, index // CHUNK)
    data = store.read_object(name)
    try:
        chunk = None if data is None else json.loads(data)
    except ValueError:
        chunk = None
    if not isinstance(chunk, list) or index % CHUNK >= len(chunk):
        raise LongrunError(
            f"child {index} of run {parent_id}'s map {digest}: its item is not in "
            f"{store.describe(name)}. Does this function use the same store as the parent?"
        )
    return chunk[index % CHUNK]


def child_outcome(checkpoint: Checkpoint) -> bool | None:
    """How a child run counts in its join: ``True`` completed, ``False`` failed for good,
    ``None`` not settled yet (still running, or a failure Lambda retries)."""
    from .protocol import Status

    status = checkpoint.status
    if status is Status.COMPLETED:
        return True
    if status is Status.CANCELLED:
        return False
    if status is not Status.FAILED:
        return None
    error, last = checkpoint.error, checkpoint.last_hop
    if error is not None and error.terminal:
        return False
    if last is None or last.where != "lambda" or last.attempt >= child_attempts():
        return False
    return None


def join_child(store: CheckpointStore, checkpoint: Checkpoint) -> None:
    """A settled child joins its parent (idempotent: see the module docstring)."""
    link = checkpoint.parent
    ok = child_outcome(checkpoint)
    if link is None or ok is None:
        return
    parent_id, digest, index = str(link["run"]), str(link["map"]), int(link["index"])
    name = join_name(parent_id, digest)
    what = f"child {checkpoint.run_id} joining run {parent_id}"

    def count(doc: dict[str, Any]) -> bool:
        if _bit(doc, index):
            return False
        _set_bit(doc, index)
        if ok:
            doc["ok"] += 1
        else:
            doc["failed"].append(index)
        if not doc.get("cancelled") and doc["started"] < doc["n"]:
            doc["launch"][str(doc["started"])] = index
            doc["started"] += 1
        if doc["ok"] + len(doc["failed"]) >= doc["n"]:
            doc["woken_by"] = index
        return True

    found = _update(store, name, count, what)
    if found is None:
        log.warning("%s: its join record %s is gone; nothing to join", what, name)
        return
    doc, _ = found
    mine = [int(j) for j, by in doc["launch"].items() if by == index]
    if mine and not doc.get("cancelled"):
        _launch(store, doc, mine)

        def clear(doc: dict[str, Any]) -> bool:
            taken = [j for j in map(str, mine) if doc["launch"].get(j) == index]
            for j in taken:
                del doc["launch"][j]
            return bool(taken)

        _update(store, name, clear, what)
    if doc.get("woken_by") == index:
        _wake_parent(store, doc)


def _wake_parent(store: CheckpointStore, join: dict[str, Any]) -> None:
    from .ports import active
    from .protocol import Status

    loaded = store.load(str(join["parent"]))
    if loaded is None:
        return
    parent = loaded.checkpoint
    wait = parent.wait or {}
    if parent.status is not Status.WAITING or wait.get("name") != join["path"]:
        return  # not waiting (yet): its hop reads the join record after its waiting write
    if not parent.function:
        raise LongrunError(f"run {parent.run_id} names no function to wake; resume it by hand.")
    payload = json.dumps(make_envelope(parent.run_id, parent.hop + 1)).encode()
    active().transport.invoke_async(parent.function, payload, None, tenant_id=parent.tenant_id)


# -- outside: status, cancel ------------------------------------------------------------------


def maps_of(checkpoint: Checkpoint) -> list[dict[str, Any]]:
    """The run's ``run.map`` records."""
    return [dict(r) for r in checkpoint.steps.values() if r.get("kind") == "map"]


def children_counts(store: CheckpointStore, checkpoint: Checkpoint) -> list[dict[str, Any]]:
    """Per map of the run: its name and children by status (from its join record)."""
    counts = []
    for record in maps_of(checkpoint):
        join = read_join(store, checkpoint.run_id, str(record["map"]))
        n = int(record["n"])
        if join is None:
            finished, failed, started = n, len(record.get("failed", [])), n
        else:
            failed = len(join["failed"])
            finished, started = join["ok"] + failed, join["started"]
        counts.append(
            {
                "map": record["map"],
                "children": n,
                "completed": finished - failed,
                "failed": failed,
                "running": started - finished,
                "pending": n - started,
                "cancelled": bool(join and join.get("cancelled")),
            }
        )
    return counts


def child_prefixes(store: CheckpointStore, parent_id: str) -> list[str]:
    """The run id prefixes of the run's children (``longrun list --parent``)."""
    loaded = store.load(parent_id)
    if loaded is None:
        return []
    return [child_run_id(parent_id, str(r["map"]), 0)[:-1] for r in maps_of(loaded.checkpoint)]


def cancel_children(store: CheckpointStore, checkpoint: Checkpoint) -> int:
    """After the parent is cancelled: stop starting children, cancel those started (a
    cancelled record for one that has not begun). Returns how many were cancelled."""
    from .ports import active
    from .protocol import Checkpoint as Document
    from .protocol import Status

    cancelled = 0
    for record in maps_of(checkpoint):
        digest = str(record["map"])

        def stop(doc: dict[str, Any]) -> bool:
            if doc.get("cancelled"):
                return False
            doc["cancelled"] = True
            return True

        found = _update(store, join_name(checkpoint.run_id, digest), stop, "cancel")
        if found is None:
            continue
        join = found[0]
        for index in _unfinished(join):
            run_id = child_run_id(checkpoint.run_id, digest, index)
            now = active().clock.wall_ms()
            tombstone = Document(
                run_id=run_id,
                status=Status.CANCELLED,
                hop=0,
                created_ms=now,
                updated_ms=now,
                event=None,
                state={},
                cursors={},
                hops=(),
                parent={"run": checkpoint.run_id, "map": digest, "index": index},
            )
            from .errors import CheckpointConflict

            try:
                store.create(tombstone)
            except CheckpointConflict:
                store.cancel(run_id)
            cancelled += 1
    return cancelled
