"""Start a long job from an API and let its clients poll it (API Gateway proxy events).

Three handlers of one deployment package:

* ``start`` (``POST /jobs``) invokes the worker asynchronously and answers ``202`` with the
  run id at once;
* ``worker`` is the long job, decorated with ``@longrun``; its run id is the job id the API
  made, so a retried start of the same job never starts a second run;
* ``status`` (``GET /jobs/{run_id}``) answers with ``longrun.get_run``.

The worker and ``status`` read the same store from ``LONGRUN_CHECKPOINT_URI``;
``WORKER_FUNCTION`` names the worker. tests/test_status_api.py deploys all three in the local
emulator.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from typing import Any

import boto3

from longrun import InvalidRunId, RunNotFound, current_run, get_run, longrun


def start(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """POST /jobs: start the worker; answer 202 with the run id without waiting for it."""
    body = json.loads(event.get("body") or "{}")
    job_id = uuid.uuid4().hex
    boto3.client("lambda").invoke(
        FunctionName=os.environ["WORKER_FUNCTION"],
        InvocationType="Event",
        Payload=json.dumps({"job_id": job_id, "items": int(body.get("items", 10))}).encode(),
    )
    return {
        "statusCode": 202,
        "headers": {"Location": f"/jobs/{job_id}"},
        "body": json.dumps({"run_id": job_id}),
    }


def status(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """GET /jobs/{run_id}: the run as stored now (404 if there is none)."""
    run_id = (event.get("pathParameters") or {}).get("run_id", "")
    try:
        run = get_run(run_id)
    except InvalidRunId:
        return {"statusCode": 400, "body": json.dumps({"error": "not a run id"})}
    except RunNotFound:
        return {"statusCode": 404, "body": json.dumps({"error": f"no run {run_id}"})}
    return {
        "statusCode": 200,
        "body": json.dumps({**dataclasses.asdict(run), "settled": run.settled}),
    }


@longrun(run_id=lambda event: event["job_id"])
def worker(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The long job: adds up its items, one every 50 ms."""
    run = current_run()
    run.state.setdefault("total", 0)
    for i in run.iterate(range(event["items"])):
        time.sleep(0.05)
        run.state["total"] += i
    return {"total": run.state["total"]}
