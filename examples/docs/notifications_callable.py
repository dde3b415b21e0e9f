"""on_complete as a callable: your own code decides where the news goes."""

import json
import urllib.request

from longrun import MemoryStore, current_run, longrun


def post_to_chat(message: dict) -> None:
    """Called once per run with the payload; raising makes Lambda's retry send it again."""
    if message["status"] == "completed":
        text = f"run {message['run_id']} done in {message['duration_ms'] // 1000} s"
    else:
        text = f"run {message['run_id']} failed: {message['error']['message']}"
    request = urllib.request.Request(
        "https://chat.example.com/hooks/jobs",
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5)


@longrun(checkpoint=MemoryStore(), on_complete=post_to_chat)
def handler(event, context):
    run = current_run()
    for _ in run.iterate(range(event["items"])):
        pass
    return {"items": event["items"]}
