"""An HTTP proxy that injects AWS errors between a function and its service (moto), on 127.0.0.1.

Point a process's boto3 at it (``AWS_ENDPOINT_URL_S3=proxy.url``) and it forwards every
request to ``target`` unchanged, except the ones a rule matches, which it answers itself
with an AWS error in the service's format::

    with FaultProxy(moto_url) as proxy:
        proxy.fail_s3_puts(times=3, status=500, code="InternalError", key_suffix="checkpoint.json")
        ...  # the first three matching PutObject requests get a 500; botocore retries them

An S3 error is an XML ``<Error>`` document with ``Code``/``Message``/``RequestId``, as S3
sends it, so botocore classifies it as S3 would (``SlowDown`` as throttling, ``500`` as a
transient server error) and applies its retry policy. Every proxied request is counted in
:attr:`FaultProxy.requests` with the status it got.
"""

from __future__ import annotations

import http.client
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from ._http import BackgroundHTTPServer
from .runtime_api import QuietHTTPServer

__all__ = ["FaultProxy", "FaultRule", "ProxiedRequest"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}
_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
}


@dataclass
class FaultRule:
    """Answer matching requests with an error: ``skip`` of them pass first, then ``times`` fail."""

    method: str
    path: re.Pattern[str]
    status: int
    code: str
    times: int
    skip: int = 0
    matched: int = 0
    failed: int = 0

    def take(self, method: str, path: str) -> bool:
        """Whether this request is to fail (counts it when it matches)."""
        if method != self.method or not self.path.search(path):
            return False
        self.matched += 1
        if self.matched <= self.skip or self.failed >= self.times:
            return False
        self.failed += 1
        return True


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    status: int
    injected: bool


class FaultProxy(BackgroundHTTPServer):
    """A reverse proxy to ``target`` (``http://host:port``) that can fail chosen requests."""

    _server_name = "FaultProxy"
    _server_class = QuietHTTPServer

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"target {target!r} must be an http://host:port URL")
        self._target = (parts.hostname, parts.port or 80)
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._requests: list[ProxiedRequest] = []

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    @property
    def url(self) -> str:
        return f"http://{self._host_port('the FaultProxy is not started')}"

    # -- rules --------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path_pattern: str,
        *,
        times: int,
        status: int = 500,
        code: str = "InternalError",
        skip: int = 0,
    ) -> FaultRule:
        """Fail ``times`` requests of ``method`` whose path matches ``path_pattern`` (a regular
        expression searched in the path and query), after letting ``skip`` of them through."""
        rule = FaultRule(method.upper(), re.compile(path_pattern), status, code, times, skip)
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail_s3_puts(
        self,
        *,
        times: int,
        status: int = 500,
        code: str = "InternalError",
        key_suffix: str = "",
        skip: int = 0,
    ) -> FaultRule:
        """Fail S3 PutObject requests (a ``PUT`` of a key, not a part upload or a copy)
        whose key ends with ``key_suffix``."""
        pattern = rf"^/[^/?]+/[^?]*{re.escape(key_suffix)}(\?(?!.*(partNumber|uploadId)).*)?$"
        return self.fail("PUT", pattern, times=times, status=status, code=code, skip=skip)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def requests(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self._requests)

    def injected(self) -> int:
        """How many requests were answered with an injected error."""
        return sum(1 for r in self.requests if r.injected)

    # -- request handling ---------------------------------------------------------------------

    def _match(self, method: str, path: str, headers: Mapping[str, str]) -> FaultRule | None:
        if method == "PUT" and any(k.lower() == "x-amz-copy-source" for k in headers):
            return None
        with self._lock:
            for rule in self._rules:
                if rule.take(method, path):
                    return rule
        return None

    def _note(self, method: str, path: str, status: int, injected: bool) -> None:
        with self._lock:
            self._requests.append(ProxiedRequest(method, path, status, injected))

    def _forward(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._target, timeout=60)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            data = response.read()
            keep = {"content-length"} if method == "HEAD" else set()
            answer = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in _HOP_BY_HOP or k.lower() in keep
            ]
            return response.status, answer, data
        finally:
            connection.close()


def _s3_error(status: int, code: str, path: str) -> bytes:
    request_id = uuid.uuid4().hex[:16].upper()
    message = _MESSAGES.get(code, f"{code} injected by FaultProxy")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{path.split('?', 1)[0]}</Resource><RequestId>{request_id}</RequestId>"
        "</Error>"
    ).encode()


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # also answers "Expect: 100-continue" (botocore's PUTs)
        server_version = "longrun-FaultProxy"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: :attr:`FaultProxy.requests` is the log."""

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                parts: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            body = self._body()
            headers = dict(self.headers.items())
            rule = proxy._match(self.command, self.path, headers)
            if rule is not None:
                data = _s3_error(rule.status, rule.code, self.path)
                proxy._note(self.command, self.path, rule.status, True)
                self.send_response(rule.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            try:
                status, answer, data = proxy._forward(self.command, self.path, headers, body)
            except OSError as exc:
                data = _s3_error(502, "BadGateway", f"{self.path}: {exc}")
                status, answer = 502, [("Content-Type", "application/xml")]
            proxy._note(self.command, self.path, status, False)
            self.send_response(status)
            for name, value in answer:
                self.send_header(name, value)
            if self.command != "HEAD":  # a HEAD answer keeps the object's Content-Length
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data and self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return _Handler
