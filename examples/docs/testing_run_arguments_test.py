from longrun import MemoryStore, current_run, longrun
from longrun.testing import Faults


@longrun(checkpoint=MemoryStore())
def handler(event, context):
    return sum(current_run().iterate(event["numbers"]))


def test_every_argument(longrun_sim):
    event = {"numbers": list(range(10))}
    # fmt: off
    # --8<-- [start:call]
    outcome = longrun_sim.run(
        handler,                      # the @longrun handler (sync, async or a bound method)
        event,                        # the first event
        timeout_s=900.0,              # the function timeout of every invocation
        retries=2,                    # Lambda's async retries after a failed attempt
        retry_delays_s=(60.0, 120.0), # delay before retry 1, 2, … (the last value repeats)
        faults=Faults(),              # fault injection, see below
        settings={"max_hops": 3},     # setting overrides, above arguments and environment
        write_latency_s=0.0,          # virtual time added to every checkpoint write
        handoff_latency_s=0.0,        # virtual time added to every hand-off
        max_invocations=1000,         # RuntimeError past this many deliveries (a runaway chain)
        function_name="longrun-sim",  # used in the fake context's ARN
        store=None,                   # for this run: "memory", "handler" or a store (see below)
    )
    # --8<-- [end:call]
    # fmt: on
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == 45
