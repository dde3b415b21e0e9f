"""Callbacks: a run waits, with no compute, for an answer from outside.

``token = run.callback(name, timeout_s=...)`` records the callback (a checkpoint, so the
token is valid before the handler hands it out) and returns a token naming the run and the
callback and carrying an unguessable secret. ``run.wait_for_callback(name)`` returns the
answer's payload if it has arrived; otherwise the hop ends ``waiting`` (woken at the timeout,
if any, by a one-time schedule).

``send_callback(token, payload, store=...)`` (and ``fail_callback``, and ``longrun callback
TOKEN``) checks the token against the run's checkpoint, records the answer as its own object
in the store with a create-if-absent write (``RUN_ID/callbacks/DIGEST.json``: it never
touches the checkpoint, whose writes belong to the hop holding the run), then invokes the
function with the next hop's envelope if the run waits for this callback. The hop that goes
``waiting`` looks for the answer once more after its write, and hands off itself if it came
in between: a run is never left waiting for an answer it has. Sending the same answer twice is
harmless; a different second answer, a forged or foreign token, or an answer after the timeout
is refused with :class:`CallbackRefused`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from .checkpoint import is_plain_json, make_envelope, validate_run_id
from .errors import LongrunError, RunNotFound, shown

if TYPE_CHECKING:
    from .run import Run
    from .stores.base import CheckpointStore

__all__ = [
    "CallbackFailed",
    "CallbackRefused",
    "CallbackTimeout",
    "callback",
    "fail_callback",
    "send_callback",
    "wait_for_callback",
]

log = logging.getLogger("longrun")

TOKEN_PREFIX = "lrcb1."
MAX_TOKEN = 2048


class CallbackTimeout(LongrunError):
    """``run.wait_for_callback``: no answer came before the callback's timeout."""


class CallbackFailed(LongrunError):
    """``run.wait_for_callback``: the answer was a failure (``fail_callback``)."""


class CallbackRefused(LongrunError):
    """``send_callback`` / ``fail_callback``: the token or the answer is not accepted."""


def _answer_name(run_id: str, path: str) -> str:
    digest = hashlib.sha256(path.encode()).hexdigest()[:32]
    return f"{run_id}/callbacks/{digest}.json"


def _token(run_id: str, path: str, secret: str) -> str:
    body = json.dumps({"r": run_id, "c": path, "s": secret}, separators=(",", ":")).encode()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def parse_token(token: object) -> tuple[str, str, str]:
    """``(run_id, callback path, secret)`` of a well-formed token; CallbackRefused else."""
    refused = CallbackRefused(
        f"{shown(token, 60)} is not a longrun callback token (tokens start with "
        f"{TOKEN_PREFIX!r}; pass it exactly as run.callback() returned it)."
    )
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN:
        raise refused
    raw = token[len(TOKEN_PREFIX) :]
    try:
        body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        raise refused from None
    if not isinstance(body, dict) or set(body) != {"r", "c", "s"}:
        raise refused
    run_id, path, secret = body["r"], body["c"], body["s"]
    if not all(isinstance(v, str) for v in (run_id, path, secret)) or len(path) > 512:
        raise refused
    validate_run_id(run_id, source="the token's run id")
    return run_id, path, secret


# -- in the handler ---------------------------------------------------------------------------


def callback(run: Run, name: str, timeout_s: float | None) -> str:
    """``run.callback``: see the module docstring."""
    from .steps import _record

    if run.signal is not None:
        raise run.signal
    if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise LongrunError(
            f"run.callback({name!r}, timeout_s={shown(timeout_s)}): give seconds > 0."
        )
    path, scope, record = _record(run, "callback", name)
    if record is None or record.get("kind") != "callback":
        timeout_ms = None if timeout_s is None else run._wall_ms() + int(timeout_s * 1000)
        record = {
            "state": "started",
            "kind": "callback",
            "scope": scope,
            "secret": os.urandom(24).hex(),
            "until_ms": timeout_ms,
        }
        run._step_records[path] = record
        run.checkpoint()  # the token is valid once this returns
    return _token(run.id, path, str(record["secret"]))


def wait_for_callback(run: Run, name: str) -> Any:
    """``run.wait_for_callback``: the payload, or the hop ends waiting for it."""
    if run.signal is not None:
        raise run.signal
    path = run._path_for(name)
    scope = [loop.pos for loop in run._stack]
    record = run._step_records.get(path)
    if record is None or record.get("kind") != "callback" or list(record.get("scope", [])) != scope:
        raise LongrunError(
            f"run.wait_for_callback({name!r}): no run.callback({name!r}) was made in this scope; "
            "make the callback (and hand its token out) first."
        )
    if record["state"] == "done":
        return _result(record, name)
    answer = _read_answer(run, path)
    if answer is not None:
        record = {**record, "state": "done", "answer": answer}
        run._step_records[path] = record
        run.checkpoint()
        return _result(record, name)
    until = record.get("until_ms")
    if until is not None and run._wall_ms() >= int(until):
        run._step_records[path] = {**record, "state": "done", "answer": {"timeout": True}}
        run.checkpoint()
        return _result(run._step_records[path], name)
    run.wait_until_ms(int(until) if until is not None else None, kind="callback", name=path)


def _result(record: dict[str, Any], name: str) -> Any:
    answer = record.get("answer") or {}
    if answer.get("timeout"):
        raise CallbackTimeout(f"run.wait_for_callback({name!r}): no answer before its timeout.")
    if not answer.get("ok"):
        raise CallbackFailed(f"callback {name!r} failed: {answer.get('error')}")
    return answer.get("payload")


def _read_answer(run: Run, path: str) -> dict[str, Any] | None:
    if run._side is None:
        return None
    name = _answer_name(run.id, path)
    data = run._side.read(name)
    if data is None:
        return None
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or ("ok" not in answer and "timeout" not in answer):
        raise LongrunError(
            f"the answer of callback {path!r} ({name} in the store) is not one longrun wrote "
            f"({shown(data[:80])}): edited by hand? Delete it and answer again."
        )
    return answer


def answer_arrived(run: Run, path: str) -> bool:
    """Whether the answer of the callback at ``path`` is in the store (after a waiting write)."""
    return _read_answer(run, path) is not None


# -- outside: the answer ----------------------------------------------------------------------


def send_callback(
    token: str, payload: Any = None, *, store: CheckpointStore | str | None = None
) -> str:
    """Answer the callback ``token`` names with ``payload`` (plain JSON), and wake its run.

    Returns ``"recorded"``, or ``"already recorded"`` when the same answer was there.
    CallbackRefused for a forged or foreign token, a different second answer, or an answer
    after the callback's timeout; RunNotFound when the run is gone."""
    if not is_plain_json(payload):
        raise CallbackRefused(
            f"send_callback: the payload {shown(payload, 80)} is not plain JSON (dict with str "
            "keys, list, str, int, finite float, bool, None)."
        )
    return _answer(token, {"ok": True, "payload": payload}, store)


def fail_callback(token: str, error: str, *, store: CheckpointStore | str | None = None) -> str:
    """Answer the callback ``token`` names with a failure: ``run.wait_for_callback`` raises
    CallbackFailed with ``error``."""
    if not isinstance(error, str) or not error:
        raise CallbackRefused(
            f"fail_callback: give the error as a non-empty string, not {shown(error, 60)}."
        )
    return _answer(token, {"ok": False, "error": error[:2000]}, store)


def _answer(token: str, answer: dict[str, Any], store: CheckpointStore | str | None) -> str:
    from .ports import active
    from .status import _store

    run_id, path, secret = parse_token(token)
    chosen = _store(store)
    loaded = chosen.load(run_id)
    if loaded is None:
        raise RunNotFound(
            f"no run {run_id!r} in {chosen.describe()}: its callback cannot be answered."
        )
    checkpoint = loaded.checkpoint
    record = checkpoint.steps.get(path)
    if (
        record is None
        or record.get("kind") != "callback"
        or not hmac.compare_digest(str(record.get("secret", "")), secret)
    ):
        raise CallbackRefused(
            f"the token does not match a callback of run {run_id!r} (forged, or from another "
            "run or store): nothing was recorded."
        )
    if record.get("state") == "done" and (record.get("answer") or {}).get("timeout"):
        raise CallbackRefused(f"callback {path!r} of run {run_id!r} timed out before this answer.")
    data = json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
    name = _answer_name(run_id, path)
    status = "recorded"
    if not chosen.create_object(name, data):
        existing = chosen.read_object(name)
        if existing is None or json.loads(existing) != answer:
            raise CallbackRefused(
                f"callback {path!r} of run {run_id!r} was already answered differently: the "
                "first answer stands."
            )
        status = "already recorded"
    _wake(chosen, run_id, path, active())
    return status


def _wake(store: CheckpointStore, run_id: str, path: str, ports: Any) -> None:
    """Invoke the run's function for its next hop if it waits for this callback."""
    loaded = store.load(run_id)
    if loaded is None:
        return
    checkpoint = loaded.checkpoint
    wait = checkpoint.wait or {}
    if checkpoint.status.value != "waiting" or wait.get("name") != path:
        return  # not waiting (yet): the hop finds the answer when it gets there
    if not checkpoint.function:
        raise LongrunError(f"run {run_id!r} names no function to wake; resume it by hand.")
    payload = json.dumps(make_envelope(run_id, checkpoint.hop + 1)).encode()
    ports.transport.invoke_async(checkpoint.function, payload, None, tenant_id=checkpoint.tenant_id)
    schedule = wait.get("schedule")
    if schedule:  # the timeout's wake-up is not needed now (best effort: it would be refused)
        try:
            ports.transport.cancel_wake(str(schedule))
        except Exception as exc:
            log.info("run %s: its timeout wake-up %s was left (%s)", run_id, schedule, exc)
