"""A rate-limited API behind run.step: each call once, backoff that can outlive the hop."""

from longrun import MemoryStore, Retry, current_run, longrun


class RateLimited(Exception):
    """What the API client raises on HTTP 429."""


def enrich(customer_id: str) -> dict:
    """Stands in for the real API call (raises RateLimited when throttled)."""
    return {"id": customer_id, "segment": "smb"}


@longrun(checkpoint=MemoryStore())
def handler(event, context):
    run = current_run()
    segments = run.state.setdefault("segments", {})  # carried across hops, unlike a local
    for customer_id in run.iterate(event["customers"]):
        # Once per customer for the whole run; a 429 waits 30 s, 60 s, 120 s, ... between
        # tries, and a wait longer than the hop has left ends the hop: the run is woken
        # after it, with no compute in between.
        customer = run.step(
            "enrich",
            enrich,
            customer_id,
            retry=Retry(attempts=6, backoff_s=30, max_backoff_s=900, on=(RateLimited,)),
        )
        segments[customer_id] = customer["segment"]
    return {"enriched": len(segments)}
