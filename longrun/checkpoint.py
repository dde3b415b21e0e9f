"""The codec: JSON encoding of checkpoint documents and the continuation envelope.

What a document must hold and allows next is the protocol's (``protocol.py``); this module
only turns documents into bytes (refusing what plain JSON would silently change) and
validates the envelope of a continuation event.

Encoding uses orjson when it is installed (a dependency, with wheels for Lambda's x86_64 and
arm64 runtimes: 15 times the standard library's speed on job state) and the standard library
otherwise, with the same outcome either way:

* each top-level part of the document is encoded on its own and the parts joined, so the
  event, which never changes during a run, is encoded once per run (an identity cache);
* orjson refuses non-string keys, ints past 64 bits, surrogates, nesting past 255 levels and
  every type it is not told to take natively, and writes ``NaN``/``Infinity`` as ``null``:
  so a part whose bytes hold ``null`` is decoded again and compared with the value, and any
  part orjson refused or changed is encoded by the standard library instead, which refuses
  non-finite floats and is checked for non-string keys;
* both take UUIDs (stored as their string) and enum members (stored as their value), which
  orjson cannot be told to refuse; they come back as strings and values.

Nothing here (or anywhere in longrun) unpickles or evaluates stored data: a checkpoint is data
an attacker with write access to the bucket might have written.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

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


class Envelope(NamedTuple):
    """The whole event of a continuation hop (a NamedTuple: cheap to make at a cold start)."""

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
        if _is_uuid(node):
            continue
        if isinstance(node, enum.Enum):
            stack.append((node.value, where, depth))
            continue
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


ENV_CODEC = "LONGRUN_JSON_CODEC"
"""``json`` forces the standard library's encoder (for comparison and for tests); the default,
``auto``, uses orjson when it can be imported."""

_Encoder = Callable[[Any], "bytes | None"]
_ENCODER: list[_Encoder] = []
_UNCHECKED: dict[_Encoder, _Encoder] = {}
"""orjson's part encoder without the ``null`` check, for the protocol's trusted fields."""


def _is_uuid(value: Any) -> bool:
    # (no UUID exists unless the uuid module was imported: longrun does not import it)
    module = sys.modules.get("uuid")
    return module is not None and isinstance(value, module.UUID)


def _plain(value: Any) -> Any:
    """The standard library's ``default``: what orjson takes natively and no more."""
    if _is_uuid(value):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__qualname__} is not JSON-serialisable")


def _stdlib_part(value: Any) -> bytes | None:
    """``value`` as JSON by the standard library, or ``None`` if it would not round-trip."""
    try:
        # ensure_ascii: the C encoder's fastest path; non-ASCII text is \u-escaped. It
        # refuses cycles, NaN and too-long ints itself, and a depth past its recursion limit.
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=_plain)
    except (TypeError, ValueError, RecursionError):
        return None
    # json.dumps silently turns non-string keys (1, None, True, 1.5) into strings, so the
    # value would come back changed: look for them (dumps succeeded: no cycle to walk into).
    if isinstance(value, (dict, list, tuple)) and _has_non_str_key(value):
        return None
    return text.encode("ascii")


def _make_orjson_part() -> _Encoder | None:
    try:
        import orjson
    except ImportError:
        return None
    dumps, loads, encode_error = orjson.dumps, orjson.loads, orjson.JSONEncodeError
    # Subclasses of str/int/dict/list, datetimes and dataclasses go to ``default``, which
    # refuses them: the standard library then decides, as it does without orjson.
    options = (
        orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )

    def refuse(value: Any) -> Any:
        raise TypeError

    def part(value: Any) -> bytes | None:
        try:
            data: bytes = dumps(value, default=refuse, option=options)
        except encode_error:
            return _stdlib_part(value)
        # ``null`` is None, or a NaN/Infinity orjson wrote as null: decode and compare.
        # (``rfind``: on Python 3.11 twice as fast as ``in`` or ``find``, a third faster
        # than a regular expression, on 100 KB of job state)
        if data.rfind(b"null") < 0 or loads(data) == value:
            return data
        return _stdlib_part(value)  # (tuples, which compare unequal to lists, land here too)

    def trusted(value: Any) -> bytes | None:
        try:
            data: bytes = dumps(value, default=refuse, option=options)
        except encode_error:
            return _stdlib_part(value)
        return data

    _UNCHECKED[part] = trusted
    return part


def _encoder() -> _Encoder:
    """The part encoder (chosen on first use, so ``import longrun`` does not load orjson)."""
    if not _ENCODER:
        choice = os.environ.get(ENV_CODEC, "auto").strip().lower()
        fast = _make_orjson_part() if choice != "json" else None
        _ENCODER.append(fast or _stdlib_part)
    return _ENCODER[0]


class _EventCache:
    """Encoded events by identity: the event is the same object at every write of a hop, and
    it never changes during a run (``run.event`` is the original event), so it is encoded
    once. The cache holds the objects it encoded, so an id is never reused while cached."""

    SIZE = 16

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, bytes]] = {}
        self._lock = threading.Lock()

    def encode(self, event: Any, encode: _Encoder) -> bytes | None:
        if event is None or isinstance(event, (str, int, float, bool)):
            return encode(event)
        hit = self._entries.get(id(event))
        if hit is not None and hit[0] is event:
            return hit[1]
        data = encode(event)
        if data is not None:
            with self._lock:
                if len(self._entries) >= self.SIZE:
                    del self._entries[next(iter(self._entries))]
                self._entries[id(event)] = (event, data)
        return data


_EVENTS = _EventCache()
_KEYS = {name: f'"{name}":'.encode() for name in (*_USER_PARTS, "timing", "steps", "wait")}

_TRUSTED = frozenset(
    {
        "format", "seq", "write_id", "run_id", "status", "hop", "origin_request_id",
        "function", "created_ms", "updated_ms", "claim", "hops", "result_note", "error",
        "next", "escalation", "tenant_id", "notice", "waits",
    }
)  # fmt: skip
"""The protocol's own fields that hold no float (ids, statuses, counters, epoch ms): orjson
cannot turn one of them into ``null``, so they are encoded in one piece without the ``null``
check. Every other field (``timing``, ``steps``, ``wait``, the user parts, and any field this
list does not name) is encoded as a checked part."""


_HEAD_OR_USER = _TRUSTED | frozenset(_USER_PARTS)


class EncodedParts:
    """The encoded step records of a run's last write, kept by one writer (one hop) for its
    next write: a step record is replaced, never changed in place, so a record that is the
    very object encoded last time has the same bytes. The cache holds the records it
    encoded, so an id is never reused while cached; a path no longer in the document is
    dropped at the next write."""

    __slots__ = ("keys", "records")

    def __init__(self) -> None:
        self.records: dict[str, tuple[Any, bytes]] = {}
        self.keys: dict[str, bytes] = {}
        """Each path as a JSON key (``"path":``)."""


def _key_bytes(key: str) -> bytes:
    return json.dumps(key).encode("ascii") + b":"


def _encode_steps(
    steps: dict[str, Any], encode: _Encoder, parts: EncodedParts | None
) -> bytes | None:
    """The ``steps`` map as JSON: each record from ``parts`` when it is the object encoded
    last time, else encoded (as a checked part) and remembered."""
    known = parts.records if parts is not None else {}
    pieces: list[bytes] = []
    for path, record in steps.items():
        hit = known.get(path)
        if hit is not None and hit[0] is record:
            pieces.append(hit[1])
            continue
        if type(path) is not str:
            return None
        data = encode(record)
        if data is None:
            return None
        if parts is None:
            piece = _key_bytes(path) + data
        else:
            key = parts.keys.get(path)
            if key is None:
                key = parts.keys[path] = _key_bytes(path)
            piece = key + data
            known[path] = (record, piece)
        pieces.append(piece)
    if parts is not None and len(known) > len(steps):
        parts.records = {path: known[path] for path in steps if path in known}
        parts.keys = {path: parts.keys[path] for path in parts.records}
    return b"{" + b",".join(pieces) + b"}"


def encode_document(document: Mapping[str, Any], parts: EncodedParts | None = None) -> bytes:
    """Serialise a checkpoint document; StateNotSerializable names the offending value.

    ``parts``: the step records encoded by this writer's last write, reused where unchanged
    (see :class:`EncodedParts`); the bytes are the same with or without it."""
    # longrun's own fields first (so "format" and "seq" lead, as FileStore reads them): the
    # trusted ones in one piece, then each other field on its own, then each user part (the
    # event from the cache).
    head = {key: value for key, value in document.items() if key in _TRUSTED}
    others = [(key, document[key]) for key in document if key not in _HEAD_OR_USER]
    users = [(name, document[name]) for name in _USER_PARTS if name in document]
    data = encode_split(head, others, users, parts)
    if data is not None:
        return data
    raise _unserializable(document)


def encode_split(
    head: dict[str, Any],
    others: Iterable[tuple[Any, Any]],
    users: Iterable[tuple[str, Any]],
    parts: EncodedParts | None = None,
) -> bytes | None:
    """A document from its pieces, as :func:`encode_document` lays it out: ``head`` (the
    trusted fields, in order), then ``others`` (each checked), then ``users`` (the user
    parts, in ``_USER_PARTS`` order). ``None`` if a piece does not encode."""
    encode = _encoder()
    first = _UNCHECKED.get(encode, encode)(head)
    if first is None:
        return None
    pieces = [first[:-1]]  # without its "}"
    comma = first != b"{}"
    for key, value in others:
        if key == "steps" and type(value) is dict:
            data = _encode_steps(value, encode, parts)
        else:
            data = encode(value) if type(key) is str else None
        if data is None:
            return None
        pieces += (b"," if comma else b"", _KEYS.get(key) or _key_bytes(key), data)
        comma = True
    for name, value in users:
        if value is None:
            data = b"null"
        elif name == "event":
            data = _EVENTS.encode(value, encode)
        else:
            data = encode(value)
        if data is None:
            return None
        pieces += (b"," if comma else b"", _KEYS[name], data)
        comma = True
    pieces.append(b"}")
    return b"".join(pieces)  # (one copy of the parts)


def _unserializable(document: Mapping[str, Any]) -> StateNotSerializable:
    """Why ``document`` does not encode, naming the value at fault."""
    found = None
    for part in (*_USER_PARTS, *(k for k in document if k not in _USER_PARTS)):
        if part in document:
            prefix = "run." + part if part in _USER_PARTS else "checkpoint." + part
            found = _find_unserializable(document[part], prefix)
            if found:
                break
    where, why = found or ("the checkpoint", "it is not JSON-serialisable")
    return StateNotSerializable(
        f"cannot checkpoint {where}: {why}. Keep run.state to dicts, lists, strings, "
        "numbers, booleans and None (convert datetimes, sets, Decimals first). The last "
        "good checkpoint is kept.",
        path=found[0] if found else None,
    )
