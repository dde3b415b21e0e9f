"""Example: an ETL over every object under an S3 prefix, longer than one Lambda can run.

Each object is read, its lines are normalised (stripped, lower-cased, blank lines dropped)
and the result is written under the destination prefix. ``run.iterate`` walks the listing by
key, so a resumed hop lists from the last finished key on (``StartAfter``) instead of from
the start, and objects added to the prefix while the job runs do not upset it.

Deploy with ``LONGRUN_CHECKPOINT_URI=s3://my-bucket/longrun/`` in the function's environment.
Event: ``{"bucket": "...", "prefix": "raw/", "dest_prefix": "clean/"}``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import boto3

from longrun import current_run, longrun

s3 = boto3.client("s3")

# Stands in for heavy per-object work in the demo (virtual time there); 0 in real use.
WORK_SECONDS = float(os.environ.get("ETL_WORK_SECONDS", "0"))


# --8<-- [start:list_keys]
def list_keys(bucket: str, prefix: str, start_after: str | None) -> Iterator[str]:
    """Every key under ``prefix``, in S3's (ascending) order, after ``start_after``."""
    paginator = s3.get_paginator("list_objects_v2")
    extra = {"StartAfter": start_after} if start_after else {}
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **extra):
        for item in page.get("Contents", ()):
            yield item["Key"]
    # --8<-- [end:list_keys]


def transform(text: str) -> str:
    """The 'T' of this ETL: normalise every non-blank line."""
    return "\n".join(line.strip().lower() for line in text.splitlines() if line.strip()) + "\n"


# --8<-- [start:handler]
@longrun  # store, hop budget and escalation come from LONGRUN_* variables
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    run = current_run()
    bucket, prefix, dest = event["bucket"], event["prefix"], event["dest_prefix"]
    keys = list_keys(bucket, prefix, start_after=run.last_key("objects"))
    for key in run.iterate(keys, name="objects", key=lambda k: k, ordered=True):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        if WORK_SECONDS:
            time.sleep(WORK_SECONDS)
        cleaned = transform(body)
        s3.put_object(Bucket=bucket, Key=dest + key[len(prefix) :], Body=cleaned.encode())
        run.state["objects"] = run.state.get("objects", 0) + 1
        run.state["lines"] = run.state.get("lines", 0) + cleaned.count("\n")
    return {"objects": run.state.get("objects", 0), "lines": run.state.get("lines", 0)}
    # --8<-- [end:handler]
