"""Lambda's Runtime API on 127.0.0.1, for one execution environment of the local emulator.

A Lambda runtime (``awslambdaric`` for Python) runs a loop against the Runtime API at
``AWS_LAMBDA_RUNTIME_API``: it asks for the next invocation, runs the handler, and posts the
result or the error. :class:`RuntimeApi` is that API for one execution environment, as in
Lambda, where every environment has its own (at ``127.0.0.1:9001``); the emulator starts one
per runtime process::

    with RuntimeApi() as api:
        invocation = api.assign("req-1", b'{"x": 1}', function_arn=arn, timeout_s=3.0)
        # python -m awslambdaric app.handler, with AWS_LAMBDA_RUNTIME_API=api.address
        invocation.wait(10)
        invocation.outcome, invocation.response

What it implements, as ``awslambdaric`` 4.x (its ``runtime_client`` C extension, aws-lambda-cpp
on libcurl, and ``lambda_runtime_client.py`` for the init error) uses it:

* ``GET /2018-06-01/runtime/invocation/next`` blocks until an invocation is assigned, then
  answers ``200`` with the event as the body and the headers ``Lambda-Runtime-Aws-Request-Id``,
  ``Lambda-Runtime-Deadline-Ms`` (epoch milliseconds: the time it is handed out plus the
  timeout), ``Lambda-Runtime-Invoked-Function-Arn``, ``Lambda-Runtime-Trace-Id`` and
  ``Content-Type: application/json`` (plus ``Lambda-Runtime-Client-Context`` and
  ``Lambda-Runtime-Cognito-Identity`` when given). aws-lambda-cpp refuses an answer without a
  request id; ``LambdaContext.get_remaining_time_in_millis()`` counts down to the deadline.
  A second ``next`` after the answer blocks, as in a frozen environment.
* ``POST /2018-06-01/runtime/invocation/{id}/response``: the result (``202``). A result over
  6,291,456 bytes is ``413`` and the invocation fails with ``Function.ResponseSizeTooLarge``.
* ``POST /2018-06-01/runtime/invocation/{id}/error``: the error document
  (``{"errorMessage", "errorType", "requestId", "stackTrace"}``) with the
  ``Lambda-Runtime-Function-Error-Type`` header (``202``).
* ``POST /2018-06-01/runtime/init/error``: the handler could not be loaded (``202``).
* An unknown request id is ``400 InvalidRequestID``; a second result for the same one is
  ``400 InvalidStateTransition``.

Every request is recorded in :attr:`RuntimeApi.requests` (method, path, headers, body size).
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._http import BackgroundHTTPServer

__all__ = [
    "API_PREFIX",
    "MAX_RESPONSE_BYTES",
    "ApiRequest",
    "QuietHTTPServer",
    "RuntimeApi",
    "RuntimeInvocation",
    "trace_id",
]

API_PREFIX = "/2018-06-01/runtime"
MAX_RESPONSE_BYTES = 6_291_456
"""Lambda's limit on a synchronous response (the runtime's ``/response`` body)."""

_READ_LIMIT = 64 * 1024 * 1024
_NEXT = f"{API_PREFIX}/invocation/next"
_INIT_ERROR = f"{API_PREFIX}/init/error"
_RESULT = re.compile(rf"{re.escape(API_PREFIX)}/invocation/(?P<id>[^/]+)/(?P<kind>response|error)")
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"


def trace_id(*, sampled: bool = False) -> str:
    """A fresh X-Ray trace header value, in the shape Lambda passes it (``Sampled=1`` with
    active tracing)."""
    epoch = f"{int(time.time()):08x}"
    root = f"Root=1-{epoch}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)}"
    return f"{root};Sampled={1 if sampled else 0}"


@dataclass
class RuntimeInvocation:
    """One invocation handed to the runtime, and what the runtime answered."""

    request_id: str
    payload: bytes = field(repr=False)
    function_arn: str
    timeout_s: float
    trace_id: str
    client_context: str | None = None
    cognito_identity: str | None = None
    tenant_id: str | None = None
    """``Lambda-Runtime-Aws-Tenant-Id``: the tenant of a tenant-isolated function's request."""
    delivered_ms: int | None = None
    """Epoch ms when ``next`` handed it out (the start of the invoke phase)."""
    deadline_ms: int | None = None
    """``delivered_ms`` + the timeout: the ``Lambda-Runtime-Deadline-Ms`` header."""
    outcome: str | None = None
    """``response`` or ``error`` once the runtime answered."""
    response: bytes | None = field(default=None, repr=False)
    content_type: str | None = None
    error: dict[str, Any] | None = None
    """The runtime's error document (``errorType``, ``errorMessage``, ``stackTrace``)."""
    error_type: str | None = None
    """The ``Lambda-Runtime-Function-Error-Type`` header of an error."""
    answered_ms: int | None = None
    _delivered: threading.Event = field(default_factory=threading.Event, repr=False)
    _answered: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait_delivered(self, timeout: float | None = None) -> bool:
        """Block until ``next`` handed this invocation out; ``False`` on timeout."""
        return self._delivered.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the runtime posted the result or the error; ``False`` on timeout."""
        return self._answered.wait(timeout)

    @property
    def delivered(self) -> bool:
        return self._delivered.is_set()

    @property
    def answered(self) -> bool:
        return self._answered.is_set()

    def remaining_ms(self) -> int | None:
        """Milliseconds until the deadline (``None`` before the invocation is handed out)."""
        if self.deadline_ms is None:
            return None
        return self.deadline_ms - int(time.time() * 1000)


@dataclass(frozen=True)
class ApiRequest:
    """A request the Runtime API received."""

    method: str
    path: str
    headers: Mapping[str, str] = field(repr=False)
    body_bytes: int
    at_ms: int


class QuietHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that does not print a traceback when a client vanishes (a killed
    runtime's kept-alive connection is reset: that is the point of killing it)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class RuntimeApi(BackgroundHTTPServer):
    """The Runtime API of one execution environment on ``127.0.0.1:<ephemeral port>``.

    :meth:`assign` queues an invocation; the runtime's ``next`` takes it. ``init_error``
    holds the document of ``/init/error`` once the runtime posted one.
    """

    _server_name = "RuntimeApi"
    _server_class = QuietHTTPServer

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[RuntimeInvocation] = deque()
        self._by_id: dict[str, RuntimeInvocation] = {}
        self._closed = False
        self._requests: list[ApiRequest] = []
        self.init_error: dict[str, Any] | None = None
        self.init_error_type: str | None = None
        self._init_error_event = threading.Event()
        self._next_calls = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> RuntimeApi:
        """Bind 127.0.0.1 on an ephemeral port and serve on a daemon thread."""
        if self._server is not None:
            raise RuntimeError("this RuntimeApi is already started")
        return super().start()

    def stop(self) -> None:
        """Release every blocked ``next`` and close the socket."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        super().stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``: the value of ``AWS_LAMBDA_RUNTIME_API`` for the runtime."""
        return self._host_port("the RuntimeApi is not started")

    # -- invocations --------------------------------------------------------------------------

    def assign(
        self,
        request_id: str,
        payload: bytes,
        *,
        function_arn: str,
        timeout_s: float,
        trace: str | None = None,
        client_context: str | None = None,
        cognito_identity: str | None = None,
        tenant_id: str | None = None,
    ) -> RuntimeInvocation:
        """Queue an invocation for the runtime's next ``next``."""
        invocation = RuntimeInvocation(
            request_id=request_id,
            payload=payload,
            function_arn=function_arn,
            timeout_s=timeout_s,
            trace_id=trace or trace_id(),
            client_context=client_context,
            cognito_identity=cognito_identity,
            tenant_id=tenant_id,
        )
        with self._cond:
            earlier = self._by_id.get(request_id)
            if earlier is not None and not earlier.answered:  # a retry may reuse a warm one
                raise ValueError(f"request id {request_id!r} is already running here")
            self._by_id[request_id] = invocation
            self._queue.append(invocation)
            self._cond.notify_all()
        return invocation

    def wait_init_error(self, timeout: float | None = None) -> bool:
        return self._init_error_event.wait(timeout)

    @property
    def requests(self) -> list[ApiRequest]:
        """Every request received, in order (a copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def next_calls(self) -> int:
        """How many ``next`` requests arrived (answered or still blocked)."""
        with self._cond:
            return self._next_calls

    # -- request handling (server threads) ----------------------------------------------------

    def _note(self, method: str, path: str, headers: Mapping[str, str], size: int) -> None:
        with self._cond:
            self._requests.append(
                ApiRequest(method, path, dict(headers), size, int(time.time() * 1000))
            )

    def _take_next(self) -> RuntimeInvocation | None:
        """Block until an invocation is queued (``None`` once the API stops)."""
        with self._cond:
            self._next_calls += 1
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait(0.5)
            invocation = self._queue.popleft()
            now = int(time.time() * 1000)
            invocation.delivered_ms = now
            invocation.deadline_ms = now + round(invocation.timeout_s * 1000)
        invocation._delivered.set()
        return invocation

    def _result(
        self, request_id: str, kind: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        with self._cond:
            invocation = self._by_id.get(request_id)
            if invocation is None or not invocation.delivered:
                return 400, {
                    "errorMessage": f"Invalid request ID: {request_id!r}",
                    "errorType": "InvalidRequestID",
                }
            if invocation.answered:
                return 400, {
                    "errorMessage": f"Invocation {request_id} already has a {invocation.outcome}",
                    "errorType": "InvalidStateTransition",
                }
            invocation.answered_ms = int(time.time() * 1000)
            if kind == "response" and len(body) > MAX_RESPONSE_BYTES:
                invocation.outcome = "error"
                invocation.error_type = "Function.ResponseSizeTooLarge"
                invocation.error = {
                    "errorType": "Function.ResponseSizeTooLarge",
                    "errorMessage": (
                        f"Response payload size ({len(body)} bytes) exceeded maximum allowed "
                        f"payload size ({MAX_RESPONSE_BYTES} bytes)."
                    ),
                }
                status, answer = (
                    413,
                    {
                        "errorMessage": (
                            f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
                        ),
                        "errorType": "RequestEntityTooLarge",
                    },
                )
            elif kind == "response":
                invocation.outcome = "response"
                invocation.response = body
                invocation.content_type = _header(headers, "Content-Type")
                status, answer = 202, {"status": "OK"}
            else:
                invocation.outcome = "error"
                invocation.error_type = _header(headers, ERROR_TYPE_HEADER)
                invocation.error = _error_document(body, invocation.error_type)
                status, answer = 202, {"status": "OK"}
        invocation._answered.set()
        return status, answer

    def _init_failed(self, body: bytes, headers: Mapping[str, str]) -> None:
        with self._cond:
            self.init_error_type = _header(headers, ERROR_TYPE_HEADER)
            self.init_error = _error_document(body, self.init_error_type)
        self._init_error_event.set()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _error_document(body: bytes, error_type: str | None) -> dict[str, Any]:
    try:
        document = json.loads(body) if body else {}
    except ValueError:
        document = {"errorMessage": body.decode("utf-8", "replace")}
    if not isinstance(document, dict):
        document = {"errorMessage": str(document)}
    if error_type and not document.get("errorType"):
        document["errorType"] = error_type
    return document


def _make_handler(api: RuntimeApi) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # libcurl keeps its connection alive between calls
        server_version = "longrun-RuntimeApi"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: :attr:`RuntimeApi.requests` is the log."""

        def do_GET(self) -> None:
            body = self._read_body()
            if body is None:
                return
            api._note("GET", self.path, dict(self.headers.items()), len(body))
            if self.path.split("?", 1)[0] != _NEXT:
                self._json(404, {"errorMessage": f"no route {self.path}", "errorType": "NotFound"})
                return
            invocation = api._take_next()
            if invocation is None:  # shutting down: the runtime is being killed anyway
                self.close_connection = True
                return
            headers = {
                "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
                "Lambda-Runtime-Trace-Id": invocation.trace_id,
            }
            if invocation.client_context is not None:
                headers["Lambda-Runtime-Client-Context"] = invocation.client_context
            if invocation.cognito_identity is not None:
                headers["Lambda-Runtime-Cognito-Identity"] = invocation.cognito_identity
            if invocation.tenant_id is not None:
                headers["Lambda-Runtime-Aws-Tenant-Id"] = invocation.tenant_id
            self._send(200, invocation.payload, headers)

        def do_POST(self) -> None:
            body = self._read_body()
            if body is None:
                return
            headers = dict(self.headers.items())
            path = self.path.split("?", 1)[0]
            api._note("POST", path, headers, len(body))
            if path == _INIT_ERROR:
                api._init_failed(body, headers)
                self._json(202, {"status": "OK"})
                return
            match = _RESULT.fullmatch(path)
            if match is None:
                self._json(404, {"errorMessage": f"no route {path}", "errorType": "NotFound"})
                return
            status, answer = api._result(match["id"], match["kind"], body, headers)
            self._json(status, answer)

        def _read_body(self) -> bytes | None:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return self._read_chunked()
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > _READ_LIMIT:
                self.close_connection = True
                self._json(413, {"errorMessage": "body too large", "errorType": "RequestTooLarge"})
                return None
            return self.rfile.read(length) if length else b""

        def _read_chunked(self) -> bytes | None:
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    self.close_connection = True
                    self._json(400, {"errorMessage": "bad chunk", "errorType": "BadRequest"})
                    return None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > _READ_LIMIT:
                    self.close_connection = True
                    self._json(
                        413, {"errorMessage": "body too large", "errorType": "RequestTooLarge"}
                    )
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline(8)

        def _json(self, status: int, body: Mapping[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), {})

        def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if body:
                    self.wfile.write(body)
            except OSError:  # the runtime process was killed while waiting
                self.close_connection = True

    return _Handler
