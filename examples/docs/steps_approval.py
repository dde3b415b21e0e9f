"""Human approval: prepare a report, ask a person, wait (no compute) for the answer."""

from longrun import CallbackTimeout, MemoryStore, current_run, longrun


def build_report(month: str) -> dict:
    """Stands in for the expensive part, done once."""
    return {"month": month, "total": 1234}


def ask_for_approval(report: dict, token: str) -> None:
    """Stands in for the message to a person (e-mail, chat) carrying the token; their
    answer is `longrun callback TOKEN --payload '{"approved": true}'` or a call to
    longrun.send_callback(token, {...}) from your approval API."""


@longrun(checkpoint=MemoryStore())
def handler(event, context):
    run = current_run()
    report = run.step("report", build_report, event["month"])
    token = run.callback("approval", timeout_s=3 * 24 * 3600)  # the same token on every hop
    run.step("ask", ask_for_approval, report, token)  # asked once, whatever happens next
    try:
        answer = run.wait_for_callback("approval")  # the hop ends here until an answer
    except CallbackTimeout:
        return {"month": event["month"], "published": False, "why": "no answer in 3 days"}
    return {"month": event["month"], "published": bool(answer.get("approved"))}
