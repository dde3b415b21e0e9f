# The hop handed off; "hop" is the hop that just ended.
continued = {"longrun": {"run_id": "…", "status": "continued", "hop": 3, "next": "lambda"}}

# A retried hop found its "continued" checkpoint already written and only re-sent the next hop.
resent = {
    "longrun": {"run_id": "…", "status": "continued", "hop": 3, "next": "lambda", "resent": True}
}

# Refused: another invocation owns (or owned) this hop. No user code ran.
duplicate = {
    "longrun": {
        "run_id": "…",
        "status": "duplicate",
        "hop": 4,
        "reason": "hop 4 is running under request 5f0c…",
    }
}

# This hop's write lost its condition: it stopped at once without handing off.
superseded = {"longrun": {"run_id": "…", "status": "superseded", "hop": 4}}

# The run was cancelled: the running hop stopped at its next write, or the next hop did not start.
cancelled = {"longrun": {"run_id": "…", "status": "cancelled", "hop": 4}}

# A new event whose run_id(event) names a run that already exists.
existing = {
    "longrun": {
        "run_id": "job-7",
        "status": "completed",
        "hop": 0,
        "existing": True,
        "result": {"done": 3},
    }
}
