"""Checkpoint cost: a store's save against a plain write of the same bytes, side by side.

* ``S3Store.replace`` (JSON encoding, the key check, a conditional ``put_object``) against a raw
  boto3 ``put_object`` of the same encoded bytes, on the same moto server on 127.0.0.1;
* ``FileStore.replace`` (encoding, lock, seq check, temp file + fsync + rename + dir fsync)
  against a plain write + fsync + rename of the same bytes in the same directory.

State sizes 1 KB to 10 MB, shaped like job state (many small dicts). The writes alternate,
REPEAT times each; the figures are ratios of medians. The raw write gets the very bytes the
store's last save wrote, already encoded, so the first ratio charges longrun for turning
``run.state`` into JSON (and checking it) and for its fencing; the second baseline encodes the
state with ``json.dumps`` first, as a hand-written checkpoint would. The codec in use (orjson,
or the standard library with ``LONGRUN_JSON_CODEC=json``) is printed with the figures.

    python bench/checkpoint_cost.py [--repeat 9] [--file-repeat 41] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from longrun import FileStore, S3Store, checkpoint

SIZES = {"1 KB": 1_000, "100 KB": 100_000, "1 MB": 1_000_000, "10 MB": 10_000_000}


def state_of(size: int) -> dict[str, Any]:
    """A realistic state: many small records, about ``size`` bytes of JSON."""
    record = {"key": "logs/2026/11/22/part-00000.gz", "bytes": 123456, "ok": True}
    per = len(json.dumps(record)) + 1
    return {"done": [dict(record, bytes=i) for i in range(max(1, size // per))], "cursor": "x"}


def document(run_id: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "seq": 0,
        "run_id": run_id,
        "status": "running",
        "hop": 0,
        "created_ms": 0,
        "updated_ms": 0,
        "state": state,
        "cursors": {"#0": {"pos": 12345, "done": False}},
        "event": {},
        "hops": [],
    }


def medians(*runs: Callable[[], None], repeat: int) -> list[float]:
    """Median seconds of each function, the functions interleaved ``repeat`` times."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for run, bucket in zip(runs, times, strict=True):
            start = time.perf_counter()
            run()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def bench_s3(repeat: int) -> list[dict[str, Any]]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        client.create_bucket(Bucket="bench-bucket")
        store = S3Store("bench-bucket", prefix="longrun/", client=client)
        return [s3_size(client, store, label, size, repeat) for label, size in SIZES.items()]
    finally:
        server.stop()


def s3_size(client: Any, store: S3Store, label: str, size: int, repeat: int) -> dict[str, Any]:
    doc = document(f"s3-{size}", state_of(size))
    holder = [store.create(doc)]

    def ours() -> None:
        holder[0] = store.replace(holder[0].checkpoint, holder[0].token)

    def raw() -> None:
        client.put_object(Bucket="bench-bucket", Key=f"raw/{size}.json", Body=holder[0].data)

    def dumped() -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        client.put_object(Bucket="bench-bucket", Key=f"raw/{size}.json", Body=body)

    ours_s, raw_s, dumped_s = medians(ours, raw, dumped, repeat=repeat)
    size_stored = len(holder[0].data)
    return _row(
        "S3Store.replace vs put_object", label, size_stored, ours_s, raw_s, dumped_s, repeat
    )


def bench_file(repeat: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        store = FileStore(Path(tmp) / "store")
        plain = Path(tmp) / "plain"
        plain.mkdir()
        return [file_size(store, plain, label, size, repeat) for label, size in SIZES.items()]


def write_fsync_rename(directory: Path, data: bytes) -> None:
    """A plain durable replace: temp file, fsync, rename, fsync of the directory."""
    target = directory / "checkpoint.json"
    temp = directory / "checkpoint.json.tmp"
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def file_size(store: FileStore, plain: Path, label: str, size: int, repeat: int) -> dict[str, Any]:
    doc = document(f"file-{size}", state_of(size))
    holder = [store.create(doc)]

    def ours() -> None:
        holder[0] = store.replace(holder[0].checkpoint, holder[0].token)

    def raw() -> None:
        write_fsync_rename(plain, holder[0].data)

    def dumped() -> None:
        write_fsync_rename(plain, json.dumps(doc, separators=(",", ":")).encode())

    ours_s, raw_s, dumped_s = medians(ours, raw, dumped, repeat=repeat)
    return _row(
        "FileStore.replace vs write+fsync+rename",
        label,
        len(holder[0].data),
        ours_s,
        raw_s,
        dumped_s,
        repeat,
    )


def _row(
    what: str, label: str, size: int, ours: float, raw: float, dumped: float, repeat: int
) -> dict[str, Any]:
    return {
        "name": "checkpoint_cost",
        "what": what,
        "state": label,
        "bytes": size,
        "ours_ms": round(ours * 1000, 2),
        "raw_ms": round(raw * 1000, 2),
        "dumps_and_raw_ms": round(dumped * 1000, 2),
        "ratio": round(ours / raw, 3),
        "ratio_vs_dumps_and_raw": round(ours / dumped, 3),
        "repeat": repeat,
        "codec": codec_name(),
    }


def codec_name() -> str:
    return "orjson" if checkpoint._encoder() is not checkpoint._stdlib_part else "json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument(
        "--file-repeat", type=int, default=41, help="rounds of the file writes (fsync varies)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = bench_s3(args.repeat) + bench_file(args.file_repeat)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"codec: {codec_name()}")
    for row in rows:
        print(
            f"{row['what']:<42} {row['state']:>7}: ours {row['ours_ms']:8.2f} ms, "
            f"raw {row['raw_ms']:8.2f} ms (x{row['ratio']:.2f}), json.dumps+raw "
            f"{row['dumps_and_raw_ms']:8.2f} ms (x{row['ratio_vs_dumps_and_raw']:.2f})"
        )


if __name__ == "__main__":
    main()
