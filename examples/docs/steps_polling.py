"""Polling an outside job: start it once, then check every 10 minutes, sleeping in between."""

from longrun import MemoryStore, current_run, longrun


def start_export(table: str) -> str:
    """Stands in for the call that starts the outside job; returns its id."""
    return f"export-{table}"


def export_status(job_id: str, check: int) -> str:
    """Stands in for the status call (here: done at the third check)."""
    return "SUCCEEDED" if check >= 3 else "RUNNING"


@longrun(checkpoint=MemoryStore())
def handler(event, context):
    run = current_run()
    job_id = run.step("start", start_export, event["table"])  # started once, ever
    for check in range(1, 145):  # a day of checks at most
        status = run.step(f"check-{check}", export_status, job_id, check)
        if status != "RUNNING":
            return {"job": job_id, "status": status, "checks": check}
        run.sleep(600, name=f"pause-{check}")  # ends the hop: no compute while it waits
    raise TimeoutError(f"{job_id} still running after a day")
