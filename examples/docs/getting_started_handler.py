from longrun import current_run, longrun


def process(key): ...  # your per-item work


@longrun  # the store comes from LONGRUN_CHECKPOINT_URI
def handler(event, context):
    run = current_run()
    for key in run.iterate(event["keys"]):
        process(key)
        run.state["done"] = run.state.get("done", 0) + 1
    return {"done": run.state.get("done", 0)}
