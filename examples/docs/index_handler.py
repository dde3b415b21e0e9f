from longrun import S3Store, current_run, longrun


def process(key): ...  # your per-item work


@longrun(checkpoint=S3Store("my-bucket", prefix="longrun/"), max_hops=10)
def handler(event, context):
    run = current_run()
    for key in run.iterate(event["keys"]):  # skips the items earlier hops finished
        process(key)
        run.state["done"] = run.state.get("done", 0) + 1
    return {"done": run.state.get("done", 0)}
