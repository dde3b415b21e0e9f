"""A job whose hops are observed: the user's own Powertools Logger (``logger=``), hops that
end by time, and an EMF blob per hop. The emulator sets its store (LONGRUN_CHECKPOINT_URI);
tests/test_observability.py runs it."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger

from longrun import current_run, longrun

logger = Logger()  # service from POWERTOOLS_SERVICE_NAME


@longrun(
    run_id=lambda event: event["job"],
    logger=logger,
    margin_ms=600,
)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    run = current_run()
    for item in run.iterate(range(event["items"])):
        logger.info("item", extra={"item": item})
        time.sleep(event["work_s"])
    return {"items": event["items"], "hops": run.hop + 1}
