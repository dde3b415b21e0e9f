import time
from collections import Counter

from longrun import MemoryStore, current_run, longrun

setup = Counter()


def read_line(f, line):
    time.sleep(1)  # one second per line


@longrun(checkpoint=MemoryStore())
def handler(event, context):
    run = current_run()
    for f in run.iterate(range(4), name="files"):
        setup[f] += 1  # code between loops re-runs when a hop resumes inside this item
        for line in run.iterate(range(10), name="lines"):
            read_line(f, line)
            run.state["lines"] = run.state.get("lines", 0) + 1
    return run.state["lines"]
