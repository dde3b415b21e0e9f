from longrun import longrun


@longrun(checkpoint="s3://my-bucket/longrun/", max_hops=50, max_run_seconds=6 * 3600)
def handler(event, context): ...
