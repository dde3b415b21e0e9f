"""The join of a ``run.map``: its names, its join record and the children's side.

A map's **join record** ``{run}/map/{digest}/join.json`` counts its children: a bitmap of
the finished ones from ``base`` on (every child below ``base`` finished, so the record holds
only the window of unfinished children), the failed indices, how many were started, and the
starts assigned but not yet confirmed (``launch``). Every change is a conditional write (the
record starts ``{"format":1,"seq":N`` as checkpoints do, which is FileStore's version).

A child that settles joins (:func:`join_child`): it sets its bit, counts itself and takes the
next pending index to start, in one conditional write; starts it; clears the assignment; and,
when it made the count complete (``woken_by``), wakes the parent. Each step is idempotent and
redone by a retry of the child's invocation, a duplicate delivery or the safety net. The
parent's side is :mod:`longrun.fanout`; ``docs/fanout.md`` tells the whole protocol.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .checkpoint import ENVELOPE_VERSION, make_envelope, validate_run_id
from .errors import EnvelopeError, LongrunConfigError, LongrunError, StoreError, shown

if TYPE_CHECKING:
    from .protocol import Checkpoint
    from .stores.base import CheckpointStore

__all__ = [
    "CHILD_KEY",
    "CHUNK",
    "cancel_children",
    "child_outcome",
    "child_run_id",
    "children_counts",
    "join_child",
    "join_name",
    "map_digest",
    "parse_child_event",
    "read_join",
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


def chunk_name(parent_id: str, digest: str, k: int) -> str:
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
        and type(body["v"]) is int
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
    rest = {k: v for k, v in doc.items() if k not in ("format", "seq")}
    return json.dumps({"format": 1, "seq": doc["seq"], **rest}, separators=(",", ":")).encode()


_JOIN_FIELDS = frozenset(
    {
        "seq",
        "kind",
        "parent",
        "path",
        "map",
        "n",
        "started",
        "base",
        "done",
        "ok",
        "failed",
        "launch",
    }
)
_JOIN_COUNTS = ("seq", "n", "started", "base", "ok")


def _decode_join(data: bytes, name: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
        if isinstance(doc, dict) and isinstance(doc.get("done"), str):
            base64.b64decode(doc["done"], validate=True)
    except ValueError:  # (binascii.Error is one)
        doc = None
    if (
        not isinstance(doc, dict)
        or not doc.keys() >= _JOIN_FIELDS
        or doc.get("kind") != "join"
        or not all(type(doc[k]) is int and doc[k] >= 0 for k in _JOIN_COUNTS)
        or not isinstance(doc["done"], str)
        or not (isinstance(doc["failed"], list) and all(type(i) is int for i in doc["failed"]))
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


def create_join(
    store: CheckpointStore,
    parent_id: str,
    path: str,
    digest: str,
    n: int,
    limit: int,
    function: str,
    tenant: str | None,
) -> dict[str, Any]:
    """Create the map's join record unless it exists; the record as stored."""
    doc = _new_join(parent_id, path, digest, n, limit, function, tenant)
    if not store.create_object(join_name(parent_id, digest), _encode(doc)):
        found = read_join(store, parent_id, digest)
        if found is not None:
            return found
    return doc


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


def launch(store: CheckpointStore, join: dict[str, Any], indices: Iterable[int]) -> None:
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


def unfinished(join: dict[str, Any]) -> list[int]:
    """Indices of the children started and not finished."""
    base, bits = int(join["base"]), _bits(join)
    return [i for i in range(base, int(join["started"])) if not bits >> (i - base) & 1]


# -- the children -----------------------------------------------------------------------------


def child_item(store: CheckpointStore, parent_id: str, digest: str, index: int) -> Any:
    """The event of child ``index``: its item, from the parent's side objects."""
    name = chunk_name(parent_id, digest, index // CHUNK)
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
        launch(store, doc, mine)

        def clear(doc: dict[str, Any]) -> bool:
            taken = [j for j in map(str, mine) if doc["launch"].get(j) == index]
            for j in taken:
                del doc["launch"][j]
            return bool(taken)

        _update(store, name, clear, what)
    if doc.get("woken_by") == index:
        _wake_parent(store, doc)


def join_settled(store: CheckpointStore, checkpoint: Checkpoint) -> None:
    """:func:`join_child` right after the write that settled the child. If it fails, the
    invocation fails without recording anything more (the result stays stored): Lambda's
    retry finds the run settled and its join owed, and joins it."""
    try:
        join_child(store, checkpoint)
    except Exception as exc:
        parent = (checkpoint.parent or {}).get("run")
        error = LongrunError(
            f"run {checkpoint.run_id} settled, but joining its parent run {parent} failed: "
            f"{exc}. A retry of this invocation joins it."
        )
        error.recorded = True
        raise error from exc


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
        for index in unfinished(join):
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
