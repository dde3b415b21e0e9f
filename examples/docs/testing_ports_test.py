import json

from longrun import MemoryStore, current_run, longrun, ports
from longrun.testing import FakeContext, VirtualClock


@longrun(checkpoint=MemoryStore(), run_id=lambda event: event["id"])
def handler(event, context):
    run = current_run()
    for i in run.iterate(range(6)):
        if i == 3 and run.hop == 0:
            run.end_hop()  # hand the run on to hop 1 after three items
    return f"done at hop {run.hop}"


class Captured(ports.Transport):
    def __init__(self):
        self.sent = []

    def invoke_async(self, function, payload, client, *, tenant_id=None):
        self.sent.append(json.loads(payload))  # the next hop's envelope, not sent


def test_the_next_hop_is_captured_not_sent():
    transport = Captured()
    with ports.installed(transport=transport):
        handler({"id": "run-a"}, FakeContext(VirtualClock(), timeout_s=900))
    assert transport.sent == [{"longrun": {"v": 1, "run_id": "run-a", "hop": 1}}]

    # Calling the handler with that envelope runs hop 1.
    with ports.installed(transport=transport):
        result = handler(transport.sent[0], FakeContext(VirtualClock(), timeout_s=900))
    assert result == "done at hop 1"
