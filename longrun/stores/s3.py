"""A checkpoint store in S3 with conditional writes.

Creation uses ``IfNoneMatch="*"``; every update ``IfMatch=<ETag read>``. S3 answers a lost
condition with 412 PreconditionFailed (or 409 ConditionalRequestConflict when two writes
race); both become :class:`CheckpointConflict`. boto3 is imported on first use, not at import.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ..errors import CheckpointConflict, LongrunConfigError, StoreError
from .base import CheckpointStore, Token

__all__ = ["S3Store"]

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class S3Store(CheckpointStore):
    """Checkpoints at ``s3://{bucket}/{prefix}{run_id}/checkpoint.json``.

    Pass ``client`` (a boto3 S3 client, e.g. pointed at moto) or ``session`` (a
    ``boto3.session.Session``) and optionally ``config`` (a ``botocore.config.Config``);
    by default a client is created from a new session on first use and reused afterwards.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        session: Any = None,
        config: Any = None,
    ) -> None:
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise LongrunConfigError(
                f"S3Store bucket={bucket!r} is not a bucket name; give the bare name, e.g. "
                "S3Store('my-bucket', prefix='longrun/')."
            )
        if not isinstance(prefix, str):
            raise LongrunConfigError(f"S3Store prefix={prefix!r} must be a string.")
        self.bucket = bucket
        # The prefix is a folder: "longrun" and "longrun/" both mean keys under "longrun/".
        prefix = prefix.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self._client = client
        self._session = session
        self._config = config
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The S3 client, created on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3

                    session = self._session or boto3.session.Session()
                    self._client = session.client("s3", config=self._config)
        return self._client

    def describe(self, key: str | None = None) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key or ''}"

    def _error(self, exc: Exception, key: str, action: str) -> Exception:
        code = _code(exc)
        if code in _CONFLICT_CODES:
            return CheckpointConflict(f"{self.describe(key)} changed since it was read ({code})")
        return StoreError(f"cannot {action} {self.describe(key)}: {exc}")

    def _read(self, key: str) -> tuple[bytes, Token] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            data = response["Body"].read()
        except Exception as exc:
            if _code(exc) in _MISSING_CODES:
                return None
            raise self._error(exc, key, "read") from exc
        return data, response["ETag"]

    def _put(self, key: str, data: bytes) -> Token:
        return self._put_object(key, data, False)

    def _put_object(self, key: str, data: bytes, create: bool, **condition: str) -> Token:
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                ContentType="application/json",
                **condition,
            )
        except Exception as exc:
            code = _code(exc)
            if create and code in _CONFLICT_CODES:
                raise CheckpointConflict(
                    f"{self.describe(key)} already exists: another invocation created this run "
                    f"first ({code})"
                ) from exc
            if not create and code in _MISSING_CODES:  # IfMatch on a key that is gone
                raise CheckpointConflict(
                    f"{self.describe(key)} was deleted since it was read ({code})"
                ) from exc
            raise self._error(exc, key, "write") from exc
        return response["ETag"]

    def _create(self, key: str, data: bytes) -> Token:
        return self._put_object(key, data, True, IfNoneMatch="*")

    def _replace(self, key: str, data: bytes, token: Token) -> Token:
        return self._put_object(key, data, False, IfMatch=token)

    def _delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            raise self._error(exc, key, "delete") from exc

    def _list(self) -> Iterator[str]:
        return self._list_under("")

    def _list_under(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", ()):
                    yield item["Key"][len(self.prefix) :]
        except Exception as exc:
            raise self._error(exc, prefix, "list") from exc


def _code(exc: Exception) -> str:
    """The error code of a botocore ClientError (without importing botocore)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = error.get("Code")
        if code:
            return str(code)
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if status:
            return str(status)
    return ""
