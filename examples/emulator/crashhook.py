"""A test hook: kill the process between a hop's "continued" checkpoint and its hand-off.

With ``JOB_CRASH_BEFORE_HANDOFF=/path/marker`` in the environment, :func:`lambda_client`
returns a boto3 Lambda client (the one ``@longrun(lambda_client=...)`` uses for the self
re-invocation) with a botocore ``before-call.lambda.Invoke`` handler that ends the process with
``os._exit(1)`` right before the ``Invoke`` of hop ``JOB_CRASH_HOP`` (default 1) is sent, that
is just after the ``continued`` checkpoint was written. The marker file is created first
(``O_EXCL``), so it happens once per marker. Without the variable it returns ``None``: longrun's
own client, nothing hooked.
"""

from __future__ import annotations

import os
from typing import Any

MARKER_ENV = "JOB_CRASH_BEFORE_HANDOFF"
HOP_ENV = "JOB_CRASH_HOP"


def lambda_client() -> Any:
    marker = os.environ.get(MARKER_ENV)
    if not marker:
        return None
    import boto3
    from botocore.config import Config

    from longrun import NotInRunError, current_run

    crash_hop = int(os.environ.get(HOP_ENV, "1"))

    def crash(**_: Any) -> None:
        try:
            hop = current_run().hop
        except NotInRunError:  # a retry re-sending the hand-off: no user code, no run
            return
        if hop != crash_hop:
            return
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        os.fsync(fd)
        os.close(fd)
        os._exit(1)

    config = Config(retries={"mode": "standard", "total_max_attempts": 3})
    client = boto3.session.Session().client("lambda", config=config)
    client.meta.events.register("before-call.lambda.Invoke", crash)
    return client
