"""A moto server (S3, ECS, EC2) for the emulator's checkpoints and Fargate tasks."""

from __future__ import annotations

import threading
from typing import Any

from .helpers import REGION


class MotoServer:
    """A moto server on 127.0.0.1 (S3, ECS, EC2), started on first use; or an existing one."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._owned: Any = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        with self._lock:
            if self._url is None:
                import logging

                from moto.server import ThreadedMotoServer

                logging.getLogger("werkzeug").setLevel(logging.ERROR)
                server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                server.start()
                host, port = server.get_host_and_port()
                self._owned, self._url = server, f"http://{host}:{port}"
            return self._url

    @property
    def started(self) -> bool:
        return self._url is not None

    def client(self, service: str) -> Any:
        import boto3

        session: Any = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        return session.client(service, endpoint_url=self.url)

    def stop(self) -> None:
        with self._lock:
            server, self._owned = self._owned, None
            if server is not None:
                server.stop()
                self._url = None
