"""Listing runs: ``longrun list`` over 10,000 runs in a moto S3 bucket (a moto server on
127.0.0.1), against reading every checkpoint as a listing without the run index would.

The bucket holds, per settled run, its checkpoint (the bytes of a real run's) and its index
marker, written straight into moto's backend (the seeding is not measured), and 20 live runs
made through the store. Measured, interleaved, medians:

- ``longrun list --json`` as a whole command (a new process: interpreter, boto3, the listing);
- ``find_runs(store)`` in process (the listing alone);
- reading every checkpoint (8 threads), over a sample of runs, scaled to all of them.

    python bench/list_runs.py [--runs 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LIVE = 20
SAMPLE = 500


def seed(runs: int) -> tuple[Any, str, str]:
    """A moto server with a bucket of ``runs`` settled runs and LIVE live ones."""
    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(name, value)  # moto's; nothing here reaches AWS
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    import boto3
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.server import ThreadedMotoServer

    from longrun import S3Store
    from longrun.protocol import Status, decode
    from longrun.stores.index import Marker

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.session.Session().client("s3", endpoint_url=url, region_name="us-east-1")
    bucket = "bench-list"
    client.create_bucket(Bucket=bucket)
    store = S3Store(bucket, prefix="jobs/", client=client)
    template = _a_real_checkpoint(store)
    backend = get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"]
    base = decode(template, where="bench", run_id="template")
    for i in range(runs):
        run_id = f"run-{i:06d}"
        doc = json.loads(template)
        doc["run_id"] = run_id
        doc["created_ms"] = base.created_ms + i * 1000
        doc["updated_ms"] = doc["created_ms"] + 600_000
        data = json.dumps(doc).encode()
        backend.put_object(bucket, f"jobs/{run_id}/checkpoint.json", data)
        checkpoint = decode(data, where="bench", run_id=run_id)
        backend.put_object(bucket, "jobs/" + Marker.of(checkpoint).key, b"")
    for i in range(LIVE):
        run_id = f"live-{i:03d}"
        store.create(base.replace(run_id=run_id, status=Status.RUNNING, result=None, seq=0))
    return server, url, bucket


def _a_real_checkpoint(store: Any) -> bytes:
    """A completed run's checkpoint bytes, made by real hops in the simulator."""
    from longrun import current_run, longrun
    from longrun.testing import LambdaSim

    @longrun(checkpoint=store, run_id=lambda event: "template")
    def handler(event: Any, context: Any) -> dict[str, int]:
        run = current_run()
        for _ in run.iterate(range(200), name="items"):
            run.state["seen"] = run.state.get("seen", 0) + 1
            time.sleep(1.0)
        return {"items": 200}

    LambdaSim(store="handler").run(handler, {"bucket": "b", "prefix": "p/"}, timeout_s=60)
    loaded = store.load("template")
    store.delete("template")
    return bytes(loaded.data)


def measure(runs: int, repeat: int) -> dict[str, Any]:
    from longrun import S3Store, find_runs

    server, url, bucket = seed(runs)
    try:
        import boto3

        client = boto3.session.Session().client("s3", endpoint_url=url, region_name="us-east-1")
        store = S3Store(bucket, prefix="jobs/", client=client)
        env = {**os.environ, "AWS_ENDPOINT_URL_S3": url}
        command = [sys.executable, "-m", "longrun.cli", "--store", f"s3://{bucket}/jobs/"]
        ids = sorted(m.run_id for m in store.markers())[:SAMPLE]
        cli_s: list[float] = []
        api_s: list[float] = []
        fetch_s: list[float] = []
        listed = 0
        for _ in range(repeat):
            start = time.perf_counter()
            out = subprocess.run(
                [*command, "list", "--json"], env=env, capture_output=True, check=True
            )
            cli_s.append(time.perf_counter() - start)
            listed = len(json.loads(out.stdout))
            start = time.perf_counter()
            found = find_runs(store)
            api_s.append(time.perf_counter() - start)
            assert len(found) == listed == runs + LIVE
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=8) as pool:
                loaded = list(pool.map(store.load, ids))
            fetch_s.append((time.perf_counter() - start) * (runs + LIVE) / len(ids))
            assert all(item is not None for item in loaded)
    finally:
        server.stop()
    cli, api, fetch = (statistics.median(v) for v in (cli_s, api_s, fetch_s))
    return {
        "runs": runs + LIVE,
        "live": LIVE,
        "listed": listed,
        "cli_list_s": round(cli, 3),
        "find_runs_s": round(api, 3),
        "fetch_every_checkpoint_s": round(fetch, 2),
        "fetch_over_index": round(fetch / api, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.runs, args.repeat)))


if __name__ == "__main__":
    main()
