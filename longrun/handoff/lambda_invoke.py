"""Self re-invocation: ``lambda.invoke(InvocationType="Event")`` with the small envelope.

The target is ``context.invoked_function_arn``, so a run started through an alias or a
version stays on it. boto3 is imported on first use; the client is cached for warm
invocations. boto3 honours ``AWS_ENDPOINT_URL_LAMBDA``, which is how the local emulator and
the tests reach their own Invoke endpoint without any change here.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["MAX_ASYNC_PAYLOAD", "invoke_async"]

MAX_ASYNC_PAYLOAD = 1024 * 1024
"""Lambda's limit for an asynchronous invocation's payload (the envelope is far below it)."""

_client: Any = None
_client_lock = threading.Lock()


def default_client() -> Any:
    """The process-wide Lambda client, created on first use."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                import boto3
                from botocore.config import Config

                # A throttled hand-off must fail within the margin, not back off for seconds:
                # Lambda's own retry of this invocation resumes the run from its checkpoint.
                config = Config(
                    retries={"mode": "standard", "total_max_attempts": 3},
                    connect_timeout=5,
                    read_timeout=10,
                )
                _client = boto3.session.Session().client("lambda", config=config)
    return _client


def invoke_async(
    function: str, payload: bytes, *, client: Any = None, tenant_id: str | None = None
) -> None:
    """Queue ``payload`` as an asynchronous invocation of ``function``.

    ``tenant_id``: a function in per-tenant isolation mode must be invoked with the tenant
    (``X-Amz-Tenant-Id``), async invocations included. Raises the client's error
    (``RecursiveInvocationException`` among them) unchanged; the caller decides what each
    means.
    """
    if len(payload) > MAX_ASYNC_PAYLOAD:  # cannot happen with an envelope; guard the contract
        raise ValueError(f"async payload of {len(payload)} bytes exceeds {MAX_ASYNC_PAYLOAD}")
    tenant = {"TenantId": tenant_id} if tenant_id else {}
    response = (client or default_client()).invoke(
        FunctionName=function, InvocationType="Event", Payload=payload, **tenant
    )
    status = response.get("StatusCode")
    if status != 202:
        raise RuntimeError(f"lambda.invoke({function!r}, Event) answered status {status}")
