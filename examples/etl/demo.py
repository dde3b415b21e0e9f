"""`make demo`: the ETL example end to end, on a local S3 (moto) and the virtual-time Lambda.

No AWS account, no Docker, no network: a moto server on 127.0.0.1 plays S3, and longrun's
simulator plays Lambda with a 60-second timeout on virtual time, so a job of about ten
minutes of (simulated) work runs through many hops in a few seconds, and is then verified.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=60.0, help="Lambda timeout, seconds")
    parser.add_argument("--work", type=float, default=2.0, help="simulated seconds per object")
    args = parser.parse_args(argv)

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://{host}:{port}",  # every boto3 client goes to moto
            AWS_ACCESS_KEY_ID="demo",
            AWS_SECRET_ACCESS_KEY="demo",
            AWS_DEFAULT_REGION="us-east-1",
            LONGRUN_CHECKPOINT_URI="s3://longrun-demo/longrun/",
            LONGRUN_MAX_HOPS="20",
            ETL_WORK_SECONDS=str(args.work),
        )
        os.environ.pop("AWS_PROFILE", None)
        return run_demo(args.objects, args.timeout)
    finally:
        server.stop()


def run_demo(objects: int, timeout_s: float) -> dict[str, Any]:
    import boto3

    from longrun.testing import LambdaSim

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="longrun-demo")
    rng = random.Random(7)
    expected_lines = 0
    for i in range(objects):
        lines = [
            f"  Record {i}-{j} VALUE={rng.randint(0, 999)}  " for j in range(rng.randint(1, 9))
        ]
        expected_lines += len(lines)
        body = "\n".join([*lines[:1], "", *lines[1:]])  # a blank line to drop
        s3.put_object(Bucket="longrun-demo", Key=f"raw/part-{i:05d}.txt", Body=body.encode())

    sys.path.insert(0, str(HERE))
    app = importlib.import_module("app")
    sim = LambdaSim(store="handler")
    event = {"bucket": "longrun-demo", "prefix": "raw/", "dest_prefix": "clean/"}
    print(f"ETL over {objects} objects, Lambda timeout {timeout_s:g}s (virtual time)\n")
    outcome = sim.run(
        app.handler, event, timeout_s=timeout_s, write_latency_s=0.05, handoff_latency_s=0.05
    )
    print(outcome.summary())

    written = sum(
        len(page.get("Contents", ()))
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket="longrun-demo", Prefix="clean/"
        )
    )
    checkpoint = s3.get_object(
        Bucket="longrun-demo", Key=f"longrun/{outcome.run_id}/checkpoint.json"
    )
    ok = (
        outcome.status == "completed"
        and outcome.result == {"objects": objects, "lines": expected_lines}
        and written == objects
    )
    print(
        f"\nrun {outcome.run_id}: {len(outcome.hops)} hops, {outcome.elapsed_s:.0f}s of virtual "
        f"time, {written}/{objects} objects written, checkpoint "
        f"{checkpoint['ContentLength']} bytes in s3://longrun-demo/longrun/"
    )
    print("verified: every object processed exactly once" if ok else "VERIFICATION FAILED")
    if not ok:
        raise SystemExit(1)
    return {"outcome": outcome, "written": written, "expected_lines": expected_lines}


if __name__ == "__main__":
    main()
