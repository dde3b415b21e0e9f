"""The codec: JSON encoding of checkpoint documents and the continuation envelope.

What a document must hold and allows next is the protocol's (``protocol.py``); this module
only turns documents into bytes (refusing what plain JSON would silently change) and
validates the envelope of a continuation event.

Nothing here (or anywhere in longrun) unpickles or evaluates stored data: a checkpoint is data
an attacker with write access to the bucket might have written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import (
    EnvelopeError,
    InvalidRunId,
    StateNotSerializable,
    shown,
)

__all__ = [
    "ENVELOPE_KEY",
    "ENVELOPE_VERSION",
    "FORMAT",
    "Envelope",
    "encode_document",
    "is_plain_json",
    "make_envelope",
    "parse_envelope",
    "validate_run_id",
]

FORMAT = 1
ENVELOPE_KEY = "longrun"
ENVELOPE_VERSION = 1

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_run_id(run_id: object, *, source: str = "run_id") -> str:
    """Return ``run_id`` if it is safe to use in a key or path, else raise InvalidRunId."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise InvalidRunId(
            f"{source}={shown(run_id)} is not a valid run id: use 1-128 characters from "
            "[A-Za-z0-9._-], starting with a letter or digit."
        )
    return run_id


@dataclass(frozen=True)
class Envelope:
    """The whole event of a continuation hop."""

    run_id: str
    hop: int


def make_envelope(run_id: str, hop: int) -> dict[str, Any]:
    """The event that starts hop ``hop`` of run ``run_id``; no user data, no store location."""
    return {ENVELOPE_KEY: {"v": ENVELOPE_VERSION, "run_id": run_id, "hop": hop}}


def parse_envelope(event: object) -> Envelope | None:
    """``None`` for an ordinary event; an Envelope for a continuation; EnvelopeError otherwise."""
    if not isinstance(event, dict) or ENVELOPE_KEY not in event:
        return None
    body = event[ENVELOPE_KEY]
    event_text = shown(event)
    if len(event) != 1 or not isinstance(body, dict):
        others = sorted((k for k in event if k != ENVELOPE_KEY), key=repr)
        what = (
            f"unexpected top-level keys {others}"
            if others
            else f"its {ENVELOPE_KEY!r} value is a {type(body).__name__}, not an object"
        )
        raise EnvelopeError(
            f"event {event_text} has a top-level {ENVELOPE_KEY!r} key but is not a longrun "
            f'envelope ({what}; expected {{"{ENVELOPE_KEY}": {{"v": 1, "run_id": ..., '
            f'"hop": N}}}} and nothing else). The {ENVELOPE_KEY!r} key is reserved: rename it '
            "in your event."
        )
    version = body.get("v")
    if isinstance(version, int) and not isinstance(version, bool) and version > ENVELOPE_VERSION:
        raise EnvelopeError(
            f"envelope {event_text} has version v={version}, newer than this longrun understands "
            f"(v={ENVELOPE_VERSION}): deploy the same longrun version to every function of the run."
        )
    problems: list[str] = []
    if "v" not in body:
        problems.append("v is missing")
    elif type(version) is not int or version != ENVELOPE_VERSION:  # not True, not 1.0
        problems.append(f"v={shown(version, 60)} is not {ENVELOPE_VERSION}")
    hop: Any = body.get("hop")
    if "hop" not in body:
        problems.append("hop is missing")
    elif not isinstance(hop, int) or isinstance(hop, bool) or hop < 0:
        problems.append(f"hop={shown(hop, 60)} is not a whole number >= 0")
    extra = set(body) - {"v", "run_id", "hop"}
    if extra:
        problems.append(f"unexpected keys {sorted(extra, key=repr)}")
    if problems:
        raise EnvelopeError(
            f"malformed longrun envelope {event_text} ({'; '.join(problems)}): expected exactly "
            f'{{"v": {ENVELOPE_VERSION}, "run_id": "<id>", "hop": <int >= 0>}}. '
            "It was not produced by longrun; do not hand-craft continuation events."
        )
    run_id = validate_run_id(body.get("run_id"), source="envelope run_id")
    return Envelope(run_id=run_id, hop=hop)


MAX_DEPTH = 500
"""Deepest nesting longrun writes (JSON encoders and decoders recurse: far below the limit)."""

_EXIT = object()


def _key_path(path: str, key: Any) -> str:
    return f"{path}[{shown(key, 60)}]"


def _find_unserializable(value: Any, path: str) -> tuple[str, str] | None:
    """The path and reason of the first value plain JSON cannot round-trip.

    One iterative pass, in bounded time and stack: it finds cycles (a container that holds
    itself), nesting deeper than :data:`MAX_DEPTH`, ints too long for Python's JSON, non-finite
    floats, keys that are not strings and values of other types.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    on_path: set[int] = set()
    while stack:
        node, where, depth = stack.pop()
        if node is _EXIT:
            on_path.discard(depth)
            continue
        if node is None or isinstance(node, (str, bool)):
            continue
        if isinstance(node, int):
            try:
                str(node)
            except ValueError:
                return where, (
                    f"an int of about {int(node.bit_length() * 0.30103):,} digits is longer "
                    "than Python's JSON accepts (sys.set_int_max_str_digits); store it as a "
                    "string"
                )
            continue
        if isinstance(node, float):
            if math.isfinite(node):
                continue
            return where, f"the float {node!r} is not valid JSON"
        if not isinstance(node, (Mapping, list, tuple)):
            return where, f"a {type(node).__qualname__} is not JSON-serialisable"
        if id(node) in on_path:
            return where, "it contains itself (a cycle): JSON cannot hold it"
        if depth >= MAX_DEPTH:
            return where, f"it nests deeper than {MAX_DEPTH} levels"
        on_path.add(id(node))
        stack.append((_EXIT, where, id(node)))  # popped after the children: leaves the path
        children: list[tuple[Any, str, int]] = []
        if isinstance(node, Mapping):
            for k, v in node.items():
                if not isinstance(k, str):
                    return _key_path(where, k), (
                        f"the key {shown(k, 60)} is a {type(k).__name__}; JSON keys are "
                        "strings and it would come back as a different key"
                    )
                children.append((v, _key_path(where, k), depth + 1))
        else:
            children = [(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node)]
        stack.extend(reversed(children))
    return None


_USER_PARTS = ("state", "cursors", "event", "result")


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _has_non_str_key(value: Any) -> bool:
    """Whether any dict inside ``value`` has a key that is not a string (a fast walk)."""
    stack = [value]
    pop, push, scalars = stack.pop, stack.append, _SCALARS
    while stack:
        node = pop()
        if isinstance(node, dict):
            for key in node:
                if type(key) is not str:
                    return True
            children: Any = node.values()
        else:
            children = node
        for child in children:
            if type(child) not in scalars and isinstance(child, (dict, list, tuple)):
                push(child)
    return False


def is_plain_json(value: Any) -> bool:
    """Whether ``value`` survives a JSON round trip unchanged (keys included)."""
    return _find_unserializable(value, "value") is None


def encode_document(document: Mapping[str, Any]) -> bytes:
    """Serialise a checkpoint document; StateNotSerializable names the offending value."""
    try:
        # ensure_ascii: the C encoder's fastest path; non-ASCII text is \u-escaped. It
        # refuses cycles, NaN and too-long ints itself, and a depth past its recursion limit.
        data: str | None = json.dumps(document, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        data = None
    # json.dumps silently turns non-string keys (1, None, True, 1.5) into strings, so the
    # state would come back changed: look for them (dumps succeeded: no cycle to walk into).
    if data is not None and not any(
        isinstance(document.get(part), (dict, list, tuple)) and _has_non_str_key(document[part])
        for part in _USER_PARTS
    ):
        return data.encode("ascii")
    found = None
    for part in (*_USER_PARTS, *(k for k in document if k not in _USER_PARTS)):
        if part in document:
            prefix = "run." + part if part in _USER_PARTS else "checkpoint." + part
            found = _find_unserializable(document[part], prefix)
            if found:
                break
    where, why = found or ("the checkpoint", "it is not JSON-serialisable")
    raise StateNotSerializable(
        f"cannot checkpoint {where}: {why}. Keep run.state to dicts, lists, strings, "
        "numbers, booleans and None (convert datetimes, sets, Decimals first). The last "
        "good checkpoint is kept.",
        path=found[0] if found else None,
    )
