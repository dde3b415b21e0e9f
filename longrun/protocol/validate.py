"""Validation of stored checkpoints: every field, at every load, before anything is written."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ..checkpoint import FORMAT, validate_run_id
from ..errors import CheckpointCorrupt, CheckpointFormatError, InvalidRunId
from .document import (
    NEXT,
    NOTICE_STATES,
    STEP_STATES,
    WAIT_KINDS,
    WHERE,
    WRITE_ID,
    Checkpoint,
    Claim,
    Cursor,
    ErrorRecord,
    Escalation,
    HopEntry,
    Notice,
    Status,
)

__all__ = ["decode", "from_json", "parse"]


_KNOWN = frozenset(
    {
        "format", "seq", "write_id", "run_id", "status", "hop", "origin_request_id",
        "function", "created_ms", "updated_ms", "claim", "event", "state", "cursors",
        "timing", "hops", "result", "result_note", "error", "next", "escalation", "tenant_id",
        "notice", "steps", "wait", "waits", "parent",
    }
)  # fmt: skip


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse(data: bytes, *, where: str) -> Any:
    """Strict JSON: no NaN/Infinity, nesting within reason.

    A float literal that overflows (``1e999``) parses as infinity without a cost to every
    load; the claim, which encodes the document before writing it, refuses it (see
    ``invocation.Invocation``), naming where it is.

    The decoder guards its own recursion: nesting deeper than the interpreter's recursion
    limit (a hostile file; longrun never writes one) is a RecursionError, reported here."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise CheckpointCorrupt(
            f"checkpoint {where} is nested too deeply to read safely. Inspect or delete it; "
            "nothing was overwritten.",
            field="(nesting)",
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointCorrupt(
            f"checkpoint {where} is not valid JSON ({_cut(str(exc))}). Inspect or delete it; "
            "longrun will not guess at its contents; nothing was overwritten.",
            field="(json)",
        ) from None


class _Bad(Exception):
    def __init__(self, path: str, why: str) -> None:
        super().__init__(path, why)
        self.path = path
        self.why = why


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: Any) -> str:
    return _cut(repr(value))


def _int(
    doc: Mapping[str, Any], name: str, path: str, *, minimum: int = 0, default: int | None = None
) -> int:
    if default is not None and name not in doc:
        return default
    value = doc.get(name)
    if type(value) is not int or value < minimum:
        raise _Bad(f"{path}{name}", f"{_show(value)} is not a whole number >= {minimum}")
    return value


def _opt_int(doc: Mapping[str, Any], name: str, path: str) -> int | None:
    if doc.get(name) is None:
        return None
    return _int(doc, name, path)


def _str(doc: Mapping[str, Any], name: str, path: str, *, optional: bool = False) -> Any:
    value = doc.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Bad(f"{path}{name}", f"{_show(value)} is not a string")
    return value


def _choice(doc: Mapping[str, Any], name: str, path: str, allowed: tuple[str, ...]) -> Any:
    value = doc.get(name)
    if value is None:
        return None
    if value not in allowed:
        raise _Bad(f"{path}{name}", f"{_show(value)} is not one of {', '.join(allowed)}")
    return value


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(path, f"a {type(value).__name__} is not an object")
    return value


def _claim(value: Any) -> Claim | None:
    if value is None:
        return None
    doc = _obj(value, "claim")
    return Claim(
        request_id=_str(doc, "request_id", "claim."),
        deadline_ms=_opt_int(doc, "deadline_ms", "claim."),
        where=_choice(doc, "where", "claim.", WHERE) or "lambda",
    )


def _cursor(path: str, value: Any) -> Cursor:
    where = f"cursors[{_cut(repr(path), 60)}]."
    doc = _obj(value, where[:-1])
    done = doc.get("done", False)
    if type(done) is not bool:
        raise _Bad(where + "done", f"{_show(done)} is not true or false")
    ordered = doc.get("ordered", False)
    if type(ordered) is not bool:
        raise _Bad(where + "ordered", f"{_show(ordered)} is not true or false")
    return Cursor(
        pos=_int(doc, "pos", where), done=done, key=doc.get("key"), has_key="key" in doc,
        ordered=ordered, total=_opt_int(doc, "total", where),
    )  # fmt: skip


def _hop_entry(index: int, value: Any) -> HopEntry:
    where = f"hops[{index}]."
    doc = _obj(value, where[:-1])
    return HopEntry(
        hop=_int(doc, "hop", where),
        attempt=_int(doc, "attempt", where, minimum=1, default=1),
        where=_choice(doc, "where", where, WHERE) or "lambda",
        request_id=_str(doc, "request_id", where, optional=True) or "",
        started_ms=_int(doc, "started_ms", where, default=0),
        ended_ms=_opt_int(doc, "ended_ms", where),
        outcome=_str(doc, "outcome", where, optional=True),
        items=_int(doc, "items", where, default=0),
    )


def _error(value: Any) -> ErrorRecord | None:
    if value is None:
        return None
    doc = _obj(value, "error")
    terminal = doc.get("terminal", False)
    if type(terminal) is not bool:
        raise _Bad("error.terminal", f"{_show(terminal)} is not true or false")
    trace = doc.get("traceback") or []
    if not isinstance(trace, list) or not all(isinstance(line, str) for line in trace):
        raise _Bad("error.traceback", "is not a list of strings")
    return ErrorRecord(
        type=_str(doc, "type", "error."),
        message=_str(doc, "message", "error."),
        terminal=terminal,
        traceback=tuple(trace),
    )


def _escalation(value: Any) -> Escalation | None:
    if value is None:
        return None
    doc = _obj(value, "escalation")
    return Escalation(
        reason=_str(doc, "reason", "escalation."),
        hop=_int(doc, "hop", "escalation."),
        task_arn=_str(doc, "task_arn", "escalation.", optional=True),
    )


def _notice(value: Any) -> Notice | None:
    if value is None:
        return None
    doc = _obj(value, "notice")
    return Notice(
        id=_str(doc, "id", "notice."),
        status=_choice(doc, "status", "notice.", ("completed", "failed")) or "completed",
        target=_str(doc, "target", "notice."),
        state=_choice(doc, "state", "notice.", NOTICE_STATES) or "failed",
        attempts=_int(doc, "attempts", "notice.", default=0),
        by=_str(doc, "by", "notice.", optional=True),
        until_ms=_opt_int(doc, "until_ms", "notice."),
        error=_str(doc, "error", "notice.", optional=True),
        sent_ms=_opt_int(doc, "sent_ms", "notice."),
    )


def _steps(value: Any) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    doc = _obj(value, "steps")
    steps: dict[str, dict[str, Any]] = {}
    for path, record in doc.items():
        where = f"steps[{_cut(repr(path), 60)}]."
        entry = _obj(record, where[:-1])
        _choice(entry, "state", where, STEP_STATES)
        if entry.get("state") is None:
            raise _Bad(where + "state", "is missing")
        _int(entry, "attempts", where, default=0)
        _opt_int(entry, "until_ms", where)
        scope = entry.get("scope", [])
        if not isinstance(scope, list) or not all(type(p) is int and p >= 0 for p in scope):
            raise _Bad(where + "scope", f"{_show(scope)} is not a list of loop positions")
        _str(entry, "ref", where, optional=True)
        steps[str(path)] = dict(entry)
    return steps


def _wait(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    doc = _obj(value, "wait")
    if _choice(doc, "kind", "wait.", WAIT_KINDS) is None:
        raise _Bad("wait.kind", "is missing")
    _str(doc, "name", "wait.")
    _opt_int(doc, "until_ms", "wait.")
    _str(doc, "schedule", "wait.", optional=True)
    return dict(doc)


def _parent(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    doc = _obj(value, "parent")
    try:
        validate_run_id(doc.get("run"))
    except InvalidRunId:
        raise _Bad("parent.run", f"{_show(doc.get('run'))} is not a valid run id") from None
    digest = doc.get("map")
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{12}", digest)):
        raise _Bad("parent.map", f"{_show(digest)} is not a map digest (12 hex digits)")
    index = doc.get("index")
    if type(index) is not int or index < 0:
        raise _Bad("parent.index", f"{_show(index)} is not an item index")
    return dict(doc)


def _timing(value: Any) -> dict[str, float]:
    doc = _obj(value if value is not None else {}, "timing")
    for name, number in doc.items():
        if type(number) not in (int, float) or not math.isfinite(number) or number < 0:
            raise _Bad(f"timing.{_cut(str(name), 40)}", f"{_show(number)} is not a duration")
    return dict(doc)


def from_json(document: Any, *, run_id: str | None = None) -> Checkpoint:
    """Validate a parsed document; ``run_id``: the run whose key it was read from."""
    try:
        return _from_json(document, run_id)
    except _Bad as bad:
        raise CheckpointCorrupt(f"{bad.path}: {bad.why}", field=bad.path) from None


def _from_json(document: Any, expected_run_id: str | None) -> Checkpoint:
    doc = _obj(document, "(document)")
    fmt = doc.get("format")
    if type(fmt) is int and fmt > FORMAT:
        raise CheckpointFormatError(
            f"format {fmt} is newer than this longrun reads ({FORMAT}): upgrade longrun in "
            "this function.",
            field="format",
        )
    if type(fmt) is not int or fmt != FORMAT:  # true == 1 in Python, not in a format field
        raise _Bad("format", f"{_show(fmt)} is not a known format ({FORMAT})")
    try:
        run_id = validate_run_id(doc.get("run_id"))
    except InvalidRunId:
        raise _Bad("run_id", f"{_show(doc.get('run_id'))} is not a valid run id") from None
    if expected_run_id is not None and run_id != expected_run_id:
        raise _Bad(
            "run_id",
            f"{run_id!r} is another run's id, stored under run {expected_run_id!r} (a copied "
            "checkpoint?)",
        )
    status = doc.get("status")
    try:
        status = Status(status)
    except ValueError:
        raise _Bad("status", f"{_show(status)} is not a known status") from None
    write_id = doc.get("write_id")
    if write_id is not None and not (isinstance(write_id, str) and WRITE_ID.fullmatch(write_id)):
        raise _Bad("write_id", f"{_show(write_id)} is not a write id")
    if "event" not in doc:
        raise _Bad("event", "is missing (the original event lives in the checkpoint)")
    state = doc.get("state")
    if not isinstance(state, dict):
        raise _Bad("state", f"a {type(state).__name__} is not an object")
    cursors = _obj(doc.get("cursors"), "cursors")
    hops = doc.get("hops")
    if not isinstance(hops, list):
        raise _Bad("hops", f"a {type(hops).__name__} is not a list")
    result_note = _str(doc, "result_note", "", optional=True)
    created = _int(doc, "created_ms", "")
    updated = _int(doc, "updated_ms", "")
    return Checkpoint(
        run_id=run_id,
        status=status,
        hop=_int(doc, "hop", ""),
        created_ms=created,
        updated_ms=updated,
        event=doc["event"],
        state=state,
        cursors={str(path): _cursor(path, value) for path, value in cursors.items()},
        hops=tuple(_hop_entry(i, entry) for i, entry in enumerate(hops)),
        seq=_int(doc, "seq", ""),
        write_id=write_id,
        origin_request_id=_str(doc, "origin_request_id", "", optional=True),
        function=_str(doc, "function", "", optional=True),
        claim=_claim(doc.get("claim")),
        timing=_timing(doc.get("timing")),
        result=doc.get("result"),
        result_note=result_note,
        error=_error(doc.get("error")),
        next=_choice(doc, "next", "", NEXT),
        escalation=_escalation(doc.get("escalation")),
        tenant_id=_str(doc, "tenant_id", "", optional=True),
        notice=_notice(doc.get("notice")),
        steps=_steps(doc.get("steps")),
        wait=_wait(doc.get("wait")),
        waits=_int(doc, "waits", "", default=0),
        parent=_parent(doc.get("parent")),
        extra={k: v for k, v in doc.items() if k not in _KNOWN},
    )


def decode(data: bytes, *, where: str, run_id: str | None = None) -> Checkpoint:
    """Parse and validate stored bytes; CheckpointCorrupt names ``where`` and the field."""
    document = parse(data, where=where)
    try:
        return from_json(document, run_id=run_id)
    except CheckpointCorrupt as exc:
        raise type(exc)(
            f"checkpoint {where} is not a valid longrun checkpoint: {exc} Inspect or delete "
            "it; nothing was overwritten and no user code ran.",
            field=exc.field,
        ) from None
