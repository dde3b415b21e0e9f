"""Run ids that make a repeated start harmless, for the three ways a job is usually started.

The default run id is the first invocation's ``aws_request_id``. Lambda's own retries of an
asynchronous invocation keep it, so they find the run they started. Every other repeat gets a
new request id and would start a second run of the same job: an SQS message delivered again,
an API client that retries after a timeout, a script that calls ``Invoke`` twice. Give those
a ``run_id=`` derived from the event, and the repeat answers with the existing run instead
(``{"longrun": {"status": ..., "existing": True}}``, with the result once it is completed).

A run id is 1-128 characters from ``[A-Za-z0-9._-]``: hash anything else.
"""

from __future__ import annotations

import hashlib
from typing import Any

from longrun import current_run, longrun


# --8<-- [start:sqs_run_id]
def sqs_run_id(event: dict[str, Any]) -> str:
    """The SQS message id: a redelivered message resumes or answers, it never restarts.

    Use a batch size of 1 on the event source mapping: one message, one run.
    """
    records = event["Records"]
    if len(records) != 1:
        raise ValueError(f"expected one SQS record (batch size 1), got {len(records)}")
    return "sqs-" + records[0]["messageId"]
    # --8<-- [end:sqs_run_id]


def api_run_id(event: dict[str, Any]) -> str:
    """The client's ``Idempotency-Key`` header (API Gateway proxy event), hashed into a run id.

    The client sends the same key when it retries; a new job gets a new key.
    """
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    key = headers["idempotency-key"]
    return "api-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def direct_run_id(event: dict[str, Any]) -> str:
    """A job id the caller chooses and sends again when it retries (a synchronous Invoke)."""
    return "job-" + str(event["job_id"])


def process(item: Any) -> None:
    """The per-item work (a placeholder)."""


def _job(event: dict[str, Any]) -> dict[str, int]:
    run = current_run()
    for item in run.iterate(event.get("items") or range(100), name="items"):
        process(item)
        run.state["done"] = run.state.get("done", 0) + 1
    return {"done": run.state.get("done", 0)}


# --8<-- [start:sqs_handler]
@longrun(checkpoint="s3://my-bucket/longrun/", run_id=sqs_run_id)
def sqs_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Started by an SQS event source mapping (batch size 1)."""
    return _job({"items": range(int(event["Records"][0]["body"]))})
    # --8<-- [end:sqs_handler]


@longrun(checkpoint="s3://my-bucket/longrun/", run_id=api_run_id)
def api_handler(event: dict[str, Any], context: Any) -> Any:
    """Behind API Gateway, started asynchronously (an async integration or a starter that
    invokes it with InvocationType=Event)."""
    return _job({"items": range(int(event["queryStringParameters"]["n"]))})


@longrun(checkpoint="s3://my-bucket/longrun/", run_id=direct_run_id)
def direct_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Invoked by a script or another service with ``{"job_id": ..., "items": [...]}``."""
    return _job(event)
