"""What the local test servers share: ``with`` calling start/stop, and an HTTP server on
127.0.0.1 (an ephemeral port) served from a daemon thread.

:class:`StartStop` is the context-manager protocol of anything with ``start()`` (which returns
the object) and ``stop()``. :class:`BackgroundHTTPServer` adds the server's lifecycle: a
subclass gives its request handler class (``_handler_class()``), its name (``_server_name``,
for the thread) and, for another one than :class:`~http.server.ThreadingHTTPServer`, its
server class (``_server_class``); it builds its public address (``url``, ``address``) from
``_host_port()``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import ClassVar, TypeVar

__all__ = ["BackgroundHTTPServer", "StartStop"]

_T = TypeVar("_T", bound="StartStop")


class StartStop:
    """``with obj as value``: ``value`` is ``obj.start()``; ``obj.stop()`` runs on the way out."""

    def start(self: _T) -> _T:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _T) -> _T:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_S = TypeVar("_S", bound="BackgroundHTTPServer")


class BackgroundHTTPServer(StartStop):
    """A ``_server_class`` on ``127.0.0.1:<ephemeral port>`` with ``daemon_threads`` on, served
    by a daemon thread named ``<_server_name>:<port>`` (polling every 50 ms for shutdown)."""

    _server_name: ClassVar[str] = "HTTPServer"
    _server_class: ClassVar[type[ThreadingHTTPServer]] = ThreadingHTTPServer
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class serving this object's requests."""
        raise NotImplementedError

    def start(self: _S) -> _S:
        """Bind 127.0.0.1 on an ephemeral port and serve on a daemon thread."""
        server = self._server_class(("127.0.0.1", 0), self._handler_class())
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self._server_name}:{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (requests in flight finish on their threads).
        Stopping a server that is not started does nothing."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _host_port(self, not_started: str) -> str:
        """``127.0.0.1:<port>``; raises ``RuntimeError(not_started)`` when not started."""
        if self._server is None:
            raise RuntimeError(not_started)
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"
