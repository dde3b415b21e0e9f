"""Fault injection at the transport: an S3 write that commits but whose reply never arrives.

``LostReply`` hooks botocore's own retry decision on one S3 client. When a chosen
``PutObject`` of a checkpoint has *succeeded* (S3 answered 200, so the write is committed),
the hook tells botocore to retry it anyway, as botocore does when a reply is lost (a reset
connection, a read timeout after the server committed). botocore then resends the very same
request: the same body, the same ``If-None-Match: *`` or ``If-Match: <etag>``. The object now
holds that body, so S3 answers the resend with 412 PreconditionFailed, and that 412 is the only
answer the caller's ``put_object`` ever sees. Nothing is mocked: moto holds the first write,
and botocore's retry path does the resend.

Mechanism (for anyone relying on it)::

    client.meta.events.register_first("needs-retry.s3.PutObject", handler)

botocore emits ``needs-retry.s3.PutObject`` after every attempt with ``response=(http,
parsed)``, ``attempts`` (1-based), ``caught_exception`` and ``request_dict``; the first
handler answer that is not ``None`` is a delay in seconds, and botocore sleeps that long and
sends the request again. The handler answers ``0`` for the chosen attempt that got a 200, and
``None`` otherwise (so the resend's 412 goes back to the caller unchanged; botocore's own
retry handler does not retry a 412). ``time.sleep(0)`` in the simulator's thread is a no-op
on its virtual clock.

Each ``PutObject`` of a ``.../checkpoint.json`` is recorded as a :class:`Write` with a
``kind`` worked out from the request itself (its conditional header and the JSON document in
its body, compared with the last document S3 accepted for that key):

* ``create``: ``If-None-Match: *`` (hop 0's claim).
* ``claim``: ``running`` with one more ``hops`` entry than the last stored document (a later
  hop's claim, a retry's or a take-over's).
* ``checkpoint``: ``running`` with the same ``hops`` (``run.checkpoint()``, the periodic
  checkpoint, a Fargate heartbeat).
* ``continued``, ``completed``, ``failed``, ``cancelled``: by ``status``.
* ``escalated``: the first ``escalated`` write; ``task``: a later one that records the task ARN.
* ``put``: an unconditional put.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LostReply", "Write"]

CHECKPOINT_SUFFIX = "/checkpoint.json"


@dataclass
class Write:
    """One ``PutObject`` call on a checkpoint, as sent and as answered."""

    key: str
    kind: str
    condition: str | None
    """``"create"`` (If-None-Match), ``"replace"`` (If-Match) or ``None``."""
    document: dict[str, Any]
    statuses: list[int | None] = field(default_factory=list)
    """HTTP status of each attempt, in order (``None``: no response, an exception)."""
    lost: bool = False
    """Whether this write's committed reply was dropped (and the request resent)."""

    @property
    def committed(self) -> bool:
        return 200 in self.statuses


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers).items():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, io.BytesIO):
        return body.getvalue()
    if hasattr(body, "read") and hasattr(body, "seek") and hasattr(body, "tell"):
        position = body.tell()
        body.seek(0)
        try:
            return bytes(body.read())
        finally:
            body.seek(position)
    return b""


class LostReply:
    """Drop the reply of the ``times`` first committed checkpoint writes that ``target`` picks.

    >>> fault = LostReply(s3_client, lambda w: w.kind == "completed").install()
    >>> ...  # run the job through S3Store(bucket, prefix, client=s3_client)
    >>> fault.lost_writes()  # [Write(kind="completed", statuses=[200, 412], lost=True, ...)]
    """

    def __init__(self, client: Any, target: Callable[[Write], bool], *, times: int = 1) -> None:
        self.client = client
        self.target = target
        self.remaining = times
        self.writes: list[Write] = []
        self.sent: list[tuple[str, dict[str, str], bytes]] = []
        """Every PutObject request put on the wire: (url, conditional headers, body)."""
        self._stored: dict[str, dict[str, Any]] = {}  # key -> last document S3 accepted
        self._current: Write | None = None
        self._lock = threading.Lock()

    def install(self) -> LostReply:
        events = self.client.meta.events
        events.register_first("needs-retry.s3.PutObject", self._needs_retry)
        events.register("before-send.s3.PutObject", self._before_send)
        return self

    def uninstall(self) -> None:
        events = self.client.meta.events
        events.unregister("needs-retry.s3.PutObject", self._needs_retry)
        events.unregister("before-send.s3.PutObject", self._before_send)

    def lost_writes(self) -> list[Write]:
        return [w for w in self.writes if w.lost]

    def kinds(self) -> list[str]:
        return [w.kind for w in self.writes]

    # -- botocore event handlers --------------------------------------------------------------

    def _before_send(self, request: Any, **_: Any) -> None:
        conditions = {
            k.lower(): (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in dict(request.headers).items()
            if k.lower().startswith("if-")
        }
        with self._lock:
            self.sent.append((str(request.url), conditions, _body_bytes(request.body)))

    def _needs_retry(
        self,
        response: Any = None,
        attempts: int = 1,
        request_dict: dict[str, Any] | None = None,
        caught_exception: BaseException | None = None,
        **_: Any,
    ) -> float | None:
        if request_dict is None:
            return None
        key = str(request_dict.get("url_path", "")).split("?", 1)[0]
        if not key.endswith(CHECKPOINT_SUFFIX):
            return None
        status = None if response is None else int(response[0].status_code)
        with self._lock:
            if attempts == 1 or self._current is None:
                self._current = self._classify(key, request_dict)
                self.writes.append(self._current)
            write = self._current
            write.statuses.append(status)
            if status == 200:
                self._stored[key] = write.document
            if (
                status == 200
                and attempts == 1
                and self.remaining > 0
                and write.condition is not None
                and self.target(write)
            ):
                self.remaining -= 1
                write.lost = True
                return 0  # "retry at once": botocore resends the same conditional PutObject
        return None

    def _classify(self, key: str, request_dict: dict[str, Any]) -> Write:
        headers = request_dict.get("headers") or {}
        if _header(headers, "if-none-match") is not None:
            condition: str | None = "create"
        elif _header(headers, "if-match") is not None:
            condition = "replace"
        else:
            condition = None
        try:
            document = json.loads(_body_bytes(request_dict.get("body")))
        except ValueError:
            document = {}
        if not isinstance(document, dict):
            document = {}
        status = document.get("status")
        previous = self._stored.get(key) or {}
        if condition is None:
            kind = "put"
        elif condition == "create":
            kind = "create"
        elif status == "running":
            grew = len(document.get("hops") or ()) > len(previous.get("hops") or ())
            kind = "claim" if grew else "checkpoint"
        elif status == "escalated":
            kind = "task" if previous.get("status") == "escalated" else "escalated"
        else:
            kind = str(status)
        return Write(key=key, kind=kind, condition=condition, document=document)
