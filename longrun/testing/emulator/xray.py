"""A local X-Ray daemon: what a function with active tracing sends, kept for assertions.

The X-Ray SDK streams each (sub)segment as one UDP datagram to ``AWS_XRAY_DAEMON_ADDRESS``:
a JSON header line (``{"format": "json", "version": 1}``), a newline, the document. This
listener keeps every document it receives, in order (``LocalLambda.traces()``).
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

__all__ = ["XRayDaemon"]


class XRayDaemon:
    """A UDP listener on 127.0.0.1 that keeps the segment documents sent to it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._documents: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="xray-daemon", daemon=True)
        self._thread.start()

    def documents(self) -> list[dict[str, Any]]:
        """Every segment and subsegment document received so far."""
        with self._lock:
            return list(self._documents)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            _, _, body = data.partition(b"\n")
            try:
                document = json.loads(body)
            except ValueError:
                continue
            if isinstance(document, dict):
                with self._lock:
                    self._documents.append(document)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
