"""Figure 9: a fan-out and join over N items: longrun's ``run.map`` against AWS's
durable-execution SDK's ``context.map``, each in its local harness.

The same job on each side: map N items (``{"i": i}``) to ``2 * i`` with at most
``--concurrency`` (default 50) at once, and return the sum of the results.

* longrun: a ``@longrun`` handler whose parent calls ``run.map("items", items,
  max_concurrency=50)``; each item is a **child run** of the same function (its own
  checkpoint, its own invocation), joined through the join record. Run by longrun's simulator,
  ``LambdaSim(store="handler").run(...)``: in-process, virtual time, an in-memory store that
  counts every byte written to it (checkpoints, the items' side objects, the join record's
  conditional writes, the run index's markers).
* SDK (``aws-durable-execution-sdk-python``): a ``@durable_execution`` handler calling
  ``context.map(items, fn, config=MapConfig(max_concurrency=50))``; each item is a branch in
  a child context of the one execution, run in its threads. Run by the SDK's local runner,
  ``DurableFunctionTestRunner``: in-process, in-memory, ``skip_time``. Its "bytes written"
  are the JSON sizes of the operation updates its checkpoints send to the runner's
  checkpoint service (``InMemoryServiceClient.checkpoint``).

Each timed run is one fresh harness from construction to its checked result, wall time by
``time.perf_counter``; the sides alternate, after one untimed warm-up each; medians.

What this does not measure: real AWS. There every longrun child is a Lambda invocation and
every write an S3 request; every SDK checkpoint is a call to the durable-execution service.
What it shows is the work each design does per item: longrun writes a small run per child
(its claim and its completion, each a few hundred bytes, plus two conditional writes of a
join record that grows by one bit per item), the SDK a start and a success update per
branch, in one execution whose history holds all of them.

    python bench/fanout_compare.py [--sizes 1000,10000] [--repeat 3] [--concurrency 50]

Without the SDK the longrun side is still measured, and the SDK's columns say why not.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from longrun import MemoryStore, current_run, longrun
from longrun.testing import LambdaSim

NAME = "fanout_compare"
TIMEOUT_S = 900


class CountingStore(MemoryStore):
    """A MemoryStore that counts the bytes and the writes it takes."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.writes = 0

    def _count(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1

    def _create(self, key: str, data: bytes) -> Any:
        self._count(data)
        return super()._create(key, data)

    def _replace(self, key: str, data: bytes, token: Any) -> Any:
        self._count(data)
        return super()._replace(key, data, token)

    def _put(self, key: str, data: bytes) -> Any:
        self._count(data)
        return super()._put(key, data)


def expected(n: int) -> int:
    return n * (n - 1)


def longrun_once(n: int, concurrency: int) -> dict[str, float]:
    store = CountingStore()

    @longrun(checkpoint=store, run_id=lambda event: event.get("id"))
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        if "i" in event:
            return int(event["i"]) * 2
        items = [{"i": i} for i in range(event["n"])]
        return sum(run.map("items", items, max_concurrency=concurrency))

    start = time.perf_counter()
    sim = LambdaSim(store="handler")
    outcome = sim.run(
        handler, {"id": "fan", "n": n}, timeout_s=TIMEOUT_S, max_invocations=3 * n + 10
    )
    elapsed = time.perf_counter() - start
    if outcome.status != "completed" or outcome.result != expected(n):
        raise RuntimeError(f"the longrun fan-out went wrong:\n{outcome.summary()[-2000:]}")
    if len(sim.children) != n:
        raise RuntimeError(f"{len(sim.children)} child runs, not {n}")
    return {
        "s": elapsed,
        "bytes": store.bytes,
        "writes": store.writes,
        "invocations": len(outcome.invocations),
    }


class Skip(Exception):
    pass


def sdk_runner(concurrency: int) -> Callable[[int], dict[str, float]]:
    if sys.version_info < (3, 11):
        raise Skip(
            f"the durable-execution SDK needs Python >= 3.11, not {platform.python_version()}"
        )
    try:
        from aws_durable_execution_sdk_python import DurableContext, durable_execution
        from aws_durable_execution_sdk_python.config import CompletionConfig, MapConfig
        from aws_durable_execution_sdk_python.execution import InvocationStatus
        from aws_durable_execution_sdk_python_testing import DurableFunctionTestRunner
        from aws_durable_execution_sdk_python_testing.client import InMemoryServiceClient
    except ImportError as exc:
        raise Skip(
            f"the durable-execution SDK or its local runner is not installed ({exc})"
        ) from exc

    sent = {"bytes": 0, "checkpoints": 0}
    original = InMemoryServiceClient.checkpoint

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        updates = kwargs["updates"] if "updates" in kwargs else args[2]
        sent["checkpoints"] += 1
        for update in updates:
            body = update.to_dict() if hasattr(update, "to_dict") else vars(update)
            sent["bytes"] += len(json.dumps(body, default=str).encode())
        return original(self, *args, **kwargs)

    InMemoryServiceClient.checkpoint = counting  # type: ignore[method-assign]

    def double(context: DurableContext, item: dict[str, int], index: int, items: Any) -> int:
        return item["i"] * 2

    @durable_execution
    def handler(event: Any, context: DurableContext) -> int:
        items = [{"i": i} for i in range(event["n"])]
        config = MapConfig(
            max_concurrency=concurrency, completion_config=CompletionConfig.all_completed()
        )
        return sum(context.map(items, double, config=config).get_results())

    def run_once(n: int) -> dict[str, float]:
        sent["bytes"] = sent["checkpoints"] = 0
        start = time.perf_counter()
        with DurableFunctionTestRunner(handler=handler) as runner:
            result = runner.run(input=json.dumps({"n": n}), execution_timeout=TIMEOUT_S)
        elapsed = time.perf_counter() - start
        if result.status is not InvocationStatus.SUCCEEDED:
            raise Skip(f"the SDK's local runner ended with {result.status}: {result.error}")
        if json.loads(result.result) != expected(n):
            raise Skip(f"the SDK's local runner returned {result.result!r}, not {expected(n)}")
        return {"s": elapsed, "bytes": sent["bytes"], "checkpoints": sent["checkpoints"]}

    run_once(10)  # warm-up, and proof that the runner works here
    return run_once


def measure(
    n: int, repeat: int, concurrency: int, sdk: Callable[[int], dict[str, float]] | None
) -> dict[str, Any]:
    longrun_once(10, concurrency)  # warm-up
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    for k in range(repeat):
        if sdk is not None and k % 2:
            theirs.append(sdk(n))
        ours.append(longrun_once(n, concurrency))
        if sdk is not None and not k % 2:
            theirs.append(sdk(n))
    row: dict[str, Any] = {
        "n": n,
        "concurrency": concurrency,
        "longrun_s": round(statistics.median(r["s"] for r in ours), 3),
        "longrun_bytes": int(statistics.median(r["bytes"] for r in ours)),
        "longrun_writes": int(statistics.median(r["writes"] for r in ours)),
        "longrun_invocations": int(statistics.median(r["invocations"] for r in ours)),
        "repeat": repeat,
    }
    row["longrun_bytes_per_item"] = round(row["longrun_bytes"] / n, 1)
    if theirs:
        row["sdk_s"] = round(statistics.median(r["s"] for r in theirs), 3)
        row["sdk_bytes"] = int(statistics.median(r["bytes"] for r in theirs))
        row["sdk_checkpoints"] = int(statistics.median(r["checkpoints"] for r in theirs))
        row["sdk_bytes_per_item"] = round(row["sdk_bytes"] / n, 1)
        row["time_ratio_sdk_over_longrun"] = round(row["sdk_s"] / row["longrun_s"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated item counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side and size")
    parser.add_argument("--concurrency", type=int, default=50, help="max_concurrency")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    try:
        sdk: Callable[[int], dict[str, float]] | None = sdk_runner(args.concurrency)
        skipped = None
    except Skip as exc:
        sdk, skipped = None, str(exc)
    rows = [measure(n, max(1, args.repeat), args.concurrency, sdk) for n in sizes]
    for row in rows:
        line = (
            f"N={row['n']:>6} at {row['concurrency']}: longrun {row['longrun_s']:.2f} s, "
            f"{row['longrun_bytes'] / 1e6:.1f} MB in {row['longrun_writes']} writes "
            f"({row['longrun_bytes_per_item']:.0f} B/item)"
        )
        if "sdk_s" in row:
            line += (
                f" | SDK {row['sdk_s']:.2f} s, {row['sdk_bytes'] / 1e6:.1f} MB in "
                f"{row['sdk_checkpoints']} checkpoints ({row['sdk_bytes_per_item']:.0f} B/item)"
                f" | time SDK/longrun x{row['time_ratio_sdk_over_longrun']}"
            )
        print(line)
    if skipped:
        print(f"SDK side SKIPPED: {skipped}")
    print(json.dumps({"name": NAME, "rows": rows, "sdk_skipped": skipped,
                      "python": platform.python_version()}))  # fmt: skip


if __name__ == "__main__":
    main()
