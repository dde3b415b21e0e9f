"""A sharded ETL over S3 prefixes: one child run per prefix, at most 50 at once, joined."""

import json

import boto3

from longrun import S3Store, current_run, longrun

s3 = boto3.client("s3")


def list_prefixes(bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="raw/", Delimiter="/"
    )
    return [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]


def keys_under(bucket: str, prefix: str):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from (item["Key"] for item in page.get("Contents", []))


def index_prefix(bucket: str, prefix: str) -> dict:
    """A child run: count the prefix's objects and bytes (hopping if it takes long), then
    write the prefix's summary beside the data."""
    run = current_run()
    totals = run.state.setdefault("totals", {"objects": 0, "bytes": 0})
    for key in run.iterate(keys_under(bucket, prefix), key=lambda k: k):  # resumes after a key
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        totals["objects"] += 1
        totals["bytes"] += len(body)
    summary_key = "summary/" + prefix.removeprefix("raw/") + "summary.json"
    s3.put_object(Bucket=bucket, Key=summary_key, Body=json.dumps(totals).encode())
    return totals


@longrun(checkpoint=S3Store("my-bucket", prefix="longrun/"))
def handler(event, context):
    run = current_run()
    if "prefix" in event:  # a child run
        return index_prefix(event["bucket"], event["prefix"])
    prefixes = [{"bucket": event["bucket"], "prefix": p} for p in list_prefixes(event["bucket"])]
    results = run.map("prefixes", prefixes, max_concurrency=50, tolerated_failures=2)
    done = [r for r in results if r is not None]  # a failed child's result is None
    return {
        "prefixes": len(results),
        "objects": sum(r["objects"] for r in done),
        "bytes": sum(r["bytes"] for r in done),
        "failed": [prefixes[i]["prefix"] for i in results.failed],
    }
