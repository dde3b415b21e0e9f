"""Handlers that make the common mistakes, run in the emulator: each hop its own process.

Every item appends ``pid mode item`` to the file named by ``PITFALL_JOURNAL``, so the test
counts how many times each item ran across processes. The store comes from the environment
(the emulator's), as a deployed function's would.
"""

import os
import time

from longrun import current_run, longrun


def _did(mode, item):
    with open(os.environ["PITFALL_JOURNAL"], "a") as journal:
        journal.write(f"{os.getpid()} {mode} {item}\n")


@longrun
def handler(event, context):
    run = current_run()
    mode = event["mode"]
    if mode == "set":  # positional iteration over a set: refused in every process
        for tag in run.iterate({f"tag-{i}" for i in range(40)}):
            _did(mode, tag)
            time.sleep(0.05)
    elif mode == "sorted_set":  # the way out: same order in every process
        for tag in run.iterate(sorted({f"tag-{i}" for i in range(40)})):
            _did(mode, tag)
            time.sleep(0.05)
    elif mode == "mutate":  # hop 0 pops the keys out of its event
        keys = event.pop("keys")
        event["mutated_in_pid"] = os.getpid()
        for key in run.iterate(keys):
            _did(mode, key)
            time.sleep(0.05)
    elif mode == "tenant":  # every hop records the tenant its context reports
        for i in run.iterate(range(30)):
            _did(mode, f"{i}:{context.tenant_id}")
            time.sleep(0.05)
    elif mode == "bad_state":  # replaces run.state by a list in the second hop
        for i in run.iterate(range(40)):
            _did(mode, i)
            if run.hop == 1 and i == 25:
                run.state = ["oops"]
            elif isinstance(run.state, dict):
                run.state["done"] = i + 1
            time.sleep(0.05)
    return {"mode": mode, "state": run.state}
