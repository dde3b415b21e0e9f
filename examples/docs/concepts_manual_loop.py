import time

from longrun import MemoryStore, current_run, longrun


def fetch_page(page):
    time.sleep(2)  # one page of some API: two seconds


@longrun(checkpoint=MemoryStore())
def handler(event, context):
    run = current_run()
    while run.state.get("page", 0) < 30:
        if run.should_yield():
            run.end_hop()
        fetch_page(run.state.get("page", 0))
        run.state["page"] = run.state.get("page", 0) + 1
    return run.state["page"]
