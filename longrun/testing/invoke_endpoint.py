"""A real HTTP endpoint for Lambda's ``Invoke`` API, on 127.0.0.1, for tests and the emulator.

boto3 talks to it like to Lambda (point a client's ``endpoint_url`` at :attr:`InvokeEndpoint.url`,
or set ``AWS_ENDPOINT_URL_LAMBDA``), so the code under test needs no change and no mock::

    with InvokeEndpoint(on_event=queue.append) as endpoint:
        client = boto3.client("lambda", endpoint_url=endpoint.url)
        client.invoke(FunctionName=arn, InvocationType="Event", Payload=b"{}")

What it implements of ``POST /2015-03-31/functions/{FunctionName}/invocations``:

* ``FunctionName`` as a name, ``name:qualifier``, a full or partial ARN (URL-encoded, as
  botocore sends it) and the ``Qualifier`` query; a qualifier in both that differ is
  Lambda's ``InvalidParameterValueException``.
* ``X-Amz-Invocation-Type: Event``: the request is handed to ``on_event`` and answered
  ``202`` with an empty body. ``RequestResponse`` (the default): ``on_invoke`` is called and
  its result answered ``200`` as JSON with ``X-Amz-Executed-Version`` (the numeric
  qualifier, else ``$LATEST``); if it raises, the answer is Lambda's function error
  (``X-Amz-Function-Error: Unhandled``). ``DryRun``: ``204``.
* Lambda's payload limits (1,048,576 bytes async, 6,291,456 bytes sync): ``413``
  ``RequestEntityTooLargeException``; a payload that is not JSON: ``400``
  ``InvalidRequestContentException``.
* Injected errors (:meth:`InvokeEndpoint.fail_next`), answered in Lambda's error format
  (``x-amzn-ErrorType`` header, JSON body with ``Type`` and ``message``), so botocore raises
  a ``ClientError`` with that code.

And of ``GET /2015-03-31/functions/{FunctionName}`` (``GetFunction``), for the functions
registered with ``function_code=`` or :meth:`InvokeEndpoint.add_function`: the
``Configuration`` (name, ARN, handler, runtime, environment variables) and a ``Code.Location``
URL on this same server (``/code/{name}.zip``) that serves the function's zip, as the
presigned S3 URL of a real function would. Any other function is ``404
ResourceNotFoundException``.

Callbacks run on the server's request threads; an exception in ``on_event`` is answered as a
``500 ServiceException`` and re-raised when the ``with`` block ends (or by :meth:`check`), so
a broken test callback cannot go unnoticed. boto3 is imported only by :meth:`client`.
"""

from __future__ import annotations

import json
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ._http import BackgroundHTTPServer

__all__ = [
    "ERROR_STATUS",
    "FunctionCode",
    "MAX_ASYNC_PAYLOAD",
    "MAX_SYNC_PAYLOAD",
    "InvokeCall",
    "InvokeEndpoint",
    "InvokeRequest",
]

MAX_ASYNC_PAYLOAD = 1_048_576
"""Lambda's limit on the payload of an ``Event`` invocation, in bytes."""

MAX_SYNC_PAYLOAD = 6_291_456
"""Lambda's limit on the payload of a ``RequestResponse`` invocation (and its response)."""

_READ_LIMIT = 64 * 1024 * 1024
"""Bodies above this are refused without being read (the connection is then closed)."""

ERROR_STATUS: dict[str, int] = {
    "AccessDeniedException": 403,
    "EC2ThrottledException": 502,
    "InvalidParameterValueException": 400,
    "InvalidRequestContentException": 400,
    "KMSAccessDeniedException": 502,
    "RecursiveInvocationException": 400,
    "RequestEntityTooLargeException": 413,
    "RequestTooLargeException": 413,
    "ResourceConflictException": 409,
    "ResourceNotFoundException": 404,
    "ResourceNotReadyException": 502,
    "ServiceException": 500,
    "TooManyRequestsException": 429,
    "UnsupportedMediaTypeException": 415,
}
"""HTTP status Lambda answers with each error code (pass ``status=`` for others)."""

_DEFAULT_MESSAGES = {
    "RecursiveInvocationException": (
        "Lambda detected that this function is invoked in a recursive loop and stopped the "
        "invocation."
    ),
    "TooManyRequestsException": "Rate Exceeded.",
    "ServiceException": "An internal error occurred.",
}

_INVOKE_PATH = re.compile(r"/2015-03-31/functions/(?P<name>[^/]+)/invocations/?")
_FUNCTION_PATH = re.compile(r"/2015-03-31/functions/(?P<name>[^/]+)/?")
_CODE_PATH = re.compile(r"/code/(?P<name>[^/]+)\.zip")
_FULL_ARN = re.compile(
    r"arn:(?P<partition>[a-z-]+):lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"function:(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?"
)
_PARTIAL_ARN = re.compile(r"(?P<account>\d{12}):function:(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?")
_INVOCATION_TYPES = ("Event", "RequestResponse", "DryRun")


@dataclass(frozen=True)
class InvokeRequest:
    """One ``Invoke`` request as the endpoint received it."""

    function: str
    """``FunctionName`` exactly as the caller gave it (URL-decoded): a name or an ARN."""
    function_name: str
    """The bare function name, taken out of an ARN or ``name:qualifier``."""
    qualifier: str | None
    """The version or alias: the ``Qualifier`` query, else the suffix of ``function``."""
    invocation_type: str
    """``Event``, ``RequestResponse`` or ``DryRun`` (as sent; validated by the endpoint)."""
    payload: bytes
    headers: Mapping[str, str] = field(repr=False)
    request_id: str
    """The ``x-amzn-RequestId`` the endpoint answered with."""

    def json(self) -> Any:
        """The payload decoded as JSON (``None`` for an empty payload)."""
        return json.loads(self.payload) if self.payload else None


@dataclass(frozen=True)
class FunctionCode:
    """What ``GetFunction`` answers for one function: its configuration and its zip."""

    handler: str
    """``Configuration.Handler``, e.g. ``app.handler``."""
    zip_bytes: bytes = field(repr=False)
    """The deployment package served at ``Code.Location``."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """``Configuration.Environment.Variables``."""
    runtime: str = "python3.12"


@dataclass(frozen=True)
class InvokeCall:
    """A request and how the endpoint answered it."""

    request: InvokeRequest
    status: int
    error: str | None
    """The ``x-amzn-ErrorType`` answered, ``None`` for a success."""


@dataclass
class _Fault:
    error: str
    status: int
    message: str
    remaining: int | None
    invocation_type: str | None


class _Answer(Exception):
    """An error answer in Lambda's format, raised inside the request handler."""

    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.extra = extra


class InvokeEndpoint(BackgroundHTTPServer):
    """Lambda's Invoke API on ``http://127.0.0.1:<ephemeral port>``; use as a context manager.

    ``on_event(request)`` receives every accepted ``Event`` invocation; ``on_invoke(request)``
    answers every ``RequestResponse`` one (a JSON-serialisable value, or ``bytes`` sent as
    they are; without it the answer is ``null``). ``functions``, if given, is the set of
    known function names: any other is ``404 ResourceNotFoundException`` (a function
    registered with code is known too). ``function_code`` maps function names to the
    :class:`FunctionCode` that ``GetFunction`` answers (see also :meth:`add_function`).
    Every answered ``Invoke`` request is recorded in :attr:`calls`; ``GetFunction`` requests
    in :attr:`get_function_calls` and code downloads in :attr:`code_downloads`.
    """

    _server_name = "InvokeEndpoint"

    def __init__(
        self,
        *,
        on_event: Callable[[InvokeRequest], None] | None = None,
        on_invoke: Callable[[InvokeRequest], Any] | None = None,
        functions: set[str] | frozenset[str] | None = None,
        function_code: Mapping[str, FunctionCode] | None = None,
        region: str = "us-east-1",
        account: str = "123456789012",
    ) -> None:
        self.on_event = on_event
        self.on_invoke = on_invoke
        self.functions = frozenset(functions) if functions is not None else None
        self.region = region
        self.account = account
        self._lock = threading.Lock()
        self._calls: list[InvokeCall] = []
        self._faults: list[_Fault] = []
        self._errors: list[BaseException] = []
        self._code: dict[str, FunctionCode] = dict(function_code or {})
        self._get_function_calls: list[str] = []
        self._code_downloads: list[str] = []

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> InvokeEndpoint:
        """Bind 127.0.0.1 on an ephemeral port and serve on a daemon thread."""
        if self._server is not None:
            raise RuntimeError("this InvokeEndpoint is already started")
        return super().start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        if exc_type is None:
            self.check()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    def check(self) -> None:
        """Re-raise the first exception an ``on_event`` callback raised, if any."""
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the ``endpoint_url`` for a boto3 Lambda client."""
        not_started = "the InvokeEndpoint is not started; use it in a with block"
        return f"http://{self._host_port(not_started)}"

    def client(self, **kwargs: Any) -> Any:
        """A new boto3 Lambda client pointed at this endpoint (``kwargs`` go to ``client()``)."""
        import boto3

        kwargs.setdefault("region_name", self.region)
        return boto3.session.Session().client("lambda", endpoint_url=self.url, **kwargs)

    def arn(self, function_name: str, qualifier: str | None = None) -> str:
        """The ARN of ``function_name`` in this endpoint's region and account."""
        base = f"arn:aws:lambda:{self.region}:{self.account}:function:{function_name}"
        return base if qualifier is None else f"{base}:{qualifier}"

    # -- function code (GetFunction) --------------------------------------------------------

    def add_function(
        self,
        name: str,
        *,
        handler: str,
        zip_bytes: bytes,
        environment: Mapping[str, str] | None = None,
        runtime: str = "python3.12",
    ) -> FunctionCode:
        """Register (or replace) the code and configuration ``GetFunction`` answers for
        ``name``; returns what was registered."""
        code = FunctionCode(handler, zip_bytes, dict(environment or {}), runtime)
        with self._lock:
            self._code[name] = code
        return code

    def code_url(self, name: str) -> str:
        """The ``Code.Location`` of ``name``: its zip on this server."""
        return f"{self.url}/code/{quote(name, safe='')}.zip"

    @property
    def get_function_calls(self) -> list[str]:
        """The function names ``GetFunction`` was asked for, answered or not (a copy)."""
        with self._lock:
            return list(self._get_function_calls)

    @property
    def code_downloads(self) -> list[str]:
        """The function names whose zip was downloaded (a copy)."""
        with self._lock:
            return list(self._code_downloads)

    def _function_code(self, name: str) -> FunctionCode | None:
        with self._lock:
            return self._code.get(name)

    def _get_function(self, function: str, query_qualifier: str | None) -> bytes:
        """The ``GetFunction`` answer for ``function`` (errors raise :class:`_Answer`)."""
        name, qualifier = self._parse_name(function, query_qualifier)
        with self._lock:
            self._get_function_calls.append(name)
        code = self._function_code(name)
        if code is None:
            raise _Answer(
                404,
                "ResourceNotFoundException",
                f"Function not found: {self.arn(name, qualifier)}",
            )
        body = {
            "Configuration": {
                "FunctionName": name,
                "FunctionArn": self.arn(name, qualifier),
                "Runtime": code.runtime,
                "Handler": code.handler,
                "CodeSize": len(code.zip_bytes),
                "Version": qualifier if (qualifier or "").isdigit() else "$LATEST",
                "PackageType": "Zip",
                "Environment": {"Variables": dict(code.environment)},
            },
            "Code": {"RepositoryType": "S3", "Location": self.code_url(name)},
        }
        return json.dumps(body).encode()

    def _download(self, name: str) -> bytes | None:
        code = self._function_code(name)
        if code is not None:
            with self._lock:
                self._code_downloads.append(name)
        return None if code is None else code.zip_bytes

    # -- what happened ----------------------------------------------------------------------

    @property
    def calls(self) -> list[InvokeCall]:
        """Every routed request with its answer, in arrival order (a copy)."""
        with self._lock:
            return list(self._calls)

    @property
    def events(self) -> list[InvokeRequest]:
        """The ``Event`` invocations accepted (answered 202), in arrival order."""
        return [
            c.request
            for c in self.calls
            if c.request.invocation_type == "Event" and c.status == 202
        ]

    # -- fault injection --------------------------------------------------------------------

    def fail_next(
        self,
        error: str,
        times: int | None = 1,
        *,
        status: int | None = None,
        message: str | None = None,
        invocation_type: str | None = None,
    ) -> None:
        """Answer the next ``times`` invocations (``None``: all, until :meth:`clear_faults`)
        with Lambda error ``error`` (e.g. ``"RecursiveInvocationException"``).

        ``status`` defaults to Lambda's for that code (:data:`ERROR_STATUS`);
        ``invocation_type`` limits the fault to ``Event`` or ``RequestResponse`` calls.
        Faults queue up: each request consumes from the oldest that matches.
        """
        if status is None:
            if error not in ERROR_STATUS:
                raise ValueError(
                    f"no known HTTP status for Lambda error {error!r}; pass status=, e.g. "
                    f"fail_next({error!r}, status=400)"
                )
            status = ERROR_STATUS[error]
        if times is not None and times < 1:
            raise ValueError(f"times={times!r} must be at least 1 (or None for every call)")
        if invocation_type is not None and invocation_type not in _INVOCATION_TYPES:
            raise ValueError(
                f"invocation_type={invocation_type!r} is not one of {_INVOCATION_TYPES}"
            )
        text = message or _DEFAULT_MESSAGES.get(error) or f"{error} injected by InvokeEndpoint"
        with self._lock:
            self._faults.append(_Fault(error, status, text, times, invocation_type))

    def clear_faults(self) -> None:
        """Drop every injected fault not yet used."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, invocation_type: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.invocation_type in (None, invocation_type):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # -- request handling (on the server's threads) ---------------------------------------

    def _record(self, request: InvokeRequest, status: int, error: str | None) -> None:
        with self._lock:
            self._calls.append(InvokeCall(request, status, error))

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _parse_name(self, function: str, query_qualifier: str | None) -> tuple[str, str | None]:
        match = _FULL_ARN.fullmatch(function) or _PARTIAL_ARN.fullmatch(function)
        if match is not None:
            name, qualifier = match["name"], match["qualifier"]
        elif function.count(":") <= 1 and function:
            name, _, suffix = function.partition(":")
            qualifier = suffix or None
        else:
            raise _Answer(
                400,
                "InvalidParameterValueException",
                f"1 validation error detected: Value '{function}' at 'functionName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern",
            )
        if query_qualifier is not None and qualifier is not None and query_qualifier != qualifier:
            raise _Answer(
                400,
                "InvalidParameterValueException",
                "The derived qualifier from the function name does not match the specified "
                "qualifier.",
            )
        return name, query_qualifier if query_qualifier is not None else qualifier

    def _handle(self, request: InvokeRequest) -> tuple[int, dict[str, str], bytes]:
        """Answer a routed request: (status, headers, body); errors raise :class:`_Answer`."""
        kind = request.invocation_type
        if kind not in _INVOCATION_TYPES:
            raise _Answer(
                400,
                "InvalidParameterValueException",
                f"1 validation error detected: Value '{kind}' at 'invocationType' failed "
                f"to satisfy constraint: Member must satisfy enum value set: "
                f"{list(_INVOCATION_TYPES)}",
            )
        fault = self._take_fault(kind)
        if fault is not None:
            extra: dict[str, Any] = {}
            if fault.error == "TooManyRequestsException":
                extra["Reason"] = "ConcurrentInvocationLimitExceeded"
            raise _Answer(fault.status, fault.error, fault.message, **extra)
        if (
            self.functions is not None
            and request.function_name not in self.functions
            and self._function_code(request.function_name) is None
        ):
            raise _Answer(
                404,
                "ResourceNotFoundException",
                f"Function not found: {self.arn(request.function_name, request.qualifier)}",
            )
        limit = MAX_ASYNC_PAYLOAD if kind == "Event" else MAX_SYNC_PAYLOAD
        if len(request.payload) > limit:
            operation = "InvokeAsync" if kind == "Event" else "Invoke"
            raise _Answer(
                413,
                "RequestEntityTooLargeException",
                f"Request must be smaller than {limit} bytes for the {operation} operation",
            )
        if request.payload:
            try:
                json.loads(request.payload)
            except ValueError as exc:  # UnicodeDecodeError is a ValueError too
                raise _Answer(
                    400,
                    "InvalidRequestContentException",
                    f"Could not parse request body into json: {exc}",
                ) from None
        if kind == "DryRun":
            return 204, {}, b""
        if kind == "Event":
            if self.on_event is not None:
                try:
                    self.on_event(request)
                except Exception as exc:
                    self._note_error(exc)
                    raise _Answer(500, "ServiceException", f"on_event failed: {exc!r}") from exc
            return 202, {}, b""
        # A numeric qualifier is a version; an alias would resolve to one, which this
        # endpoint does not model, so it reports $LATEST as for an unqualified call.
        version = request.qualifier if (request.qualifier or "").isdigit() else None
        headers = {"X-Amz-Executed-Version": version or "$LATEST"}
        try:
            result = self.on_invoke(request) if self.on_invoke is not None else None
            body = result if isinstance(result, bytes) else json.dumps(result).encode()
        except Exception as exc:  # a function error: Lambda answers 200 with the error
            headers["X-Amz-Function-Error"] = "Unhandled"
            body = _function_error(type(exc).__name__, str(exc), traceback.format_exception(exc))
        if len(body) > MAX_SYNC_PAYLOAD:
            headers["X-Amz-Function-Error"] = "Unhandled"
            body = _function_error(
                "Function.ResponseSizeTooLarge",
                f"Response payload size exceeded maximum allowed payload size "
                f"({MAX_SYNC_PAYLOAD} bytes).",
                [],
            )
        return 200, headers, body


def _function_error(kind: str, message: str, stack: list[str]) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": kind, "stackTrace": stack}).encode()


def _make_handler(endpoint: InvokeEndpoint) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
        server_version = "longrun-InvokeEndpoint"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read :attr:`InvokeEndpoint.calls` instead of an access log."""

        def do_POST(self) -> None:
            request_id = str(uuid.uuid4())
            parts = urlsplit(self.path)
            match = _INVOKE_PATH.fullmatch(parts.path)
            body = self._read_body(request_id)
            if body is None:
                return
            if match is None:
                self._send_error(
                    404, "UnknownOperationException", f"no operation at {parts.path}", request_id
                )
                return
            function = unquote(match["name"])
            qualifiers = parse_qs(parts.query).get("Qualifier")
            headers = {k: v for k, v in self.headers.items()}
            kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
            try:
                name, qualifier = endpoint._parse_name(
                    function, qualifiers[0] if qualifiers else None
                )
            except _Answer as answer:
                name, qualifier = function, None
                request = InvokeRequest(function, name, qualifier, kind, body, headers, request_id)
                endpoint._record(request, answer.status, answer.error)
                self._send_error(answer.status, answer.error, answer.message, request_id)
                return
            request = InvokeRequest(function, name, qualifier, kind, body, headers, request_id)
            try:
                status, extra, payload = endpoint._handle(request)
            except _Answer as answer:
                endpoint._record(request, answer.status, answer.error)
                self._send_error(
                    answer.status, answer.error, answer.message, request_id, **answer.extra
                )
                return
            endpoint._record(request, status, None)
            self._send(status, payload, request_id, extra)

        def do_GET(self) -> None:
            request_id = str(uuid.uuid4())
            if self._read_body(request_id) is None:
                return
            parts = urlsplit(self.path)
            code = _CODE_PATH.fullmatch(parts.path)
            if code is not None:
                data = endpoint._download(unquote(code["name"]))
                if data is None:
                    self._send_error(
                        404, "NoSuchKey", "The specified key does not exist.", request_id
                    )
                else:
                    self._send(200, data, request_id, {"Content-Type": "application/zip"})
                return
            match = _FUNCTION_PATH.fullmatch(parts.path)
            if match is None:
                self._send_error(
                    404, "UnknownOperationException", f"no operation at {parts.path}", request_id
                )
                return
            qualifiers = parse_qs(parts.query).get("Qualifier")
            try:
                body = endpoint._get_function(
                    unquote(match["name"]), qualifiers[0] if qualifiers else None
                )
            except _Answer as answer:
                self._send_error(
                    answer.status, answer.error, answer.message, request_id, **answer.extra
                )
                return
            self._send(200, body, request_id, {})

        def do_PUT(self) -> None:
            self._not_found()

        do_DELETE = do_HEAD = do_PUT

        def _not_found(self) -> None:
            request_id = str(uuid.uuid4())
            if self._read_body(request_id) is not None:
                self._send_error(
                    404, "UnknownOperationException", f"no operation at {self.path}", request_id
                )

        def _read_body(self, request_id: str) -> bytes | None:
            """The request body, or ``None`` after answering a body that cannot be read."""
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                self.close_connection = True
                self._send_error(
                    411, "LengthRequiredException", "Content-Length is required", request_id
                )
                return None
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > _READ_LIMIT:
                self.close_connection = True  # the unread body must not be parsed as a request
                self._send_error(
                    413,
                    "RequestEntityTooLargeException",
                    f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the Invoke "
                    "operation",
                    request_id,
                )
                return None
            return self.rfile.read(length) if length else b""

        def _send_error(
            self, status: int, error: str, message: str, request_id: str, **extra: Any
        ) -> None:
            body = {"Type": "Service" if status >= 500 else "User", "message": message, **extra}
            headers = {"x-amzn-ErrorType": error}
            if status == 429:
                headers["Retry-After"] = "1"
            self._send(status, json.dumps(body).encode(), request_id, headers)

        def _send(
            self, status: int, body: bytes, request_id: str, headers: Mapping[str, str]
        ) -> None:
            self.send_response(status)
            if "Content-Type" not in headers:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", request_id)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

    return _Handler
