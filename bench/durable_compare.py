"""Figure 5: longrun against AWS's durable-execution SDK on the same loop of N trivial items.

The same job, written idiomatically for each: a loop over ``range(N)`` whose body adds the
item to a total that survives a hop / a replay.

* longrun: ``@longrun(checkpoint=MemoryStore())``, ``for i in run.iterate(range(n))``, the
  total kept in ``run.state``. Run by longrun's local simulator, ``LambdaSim().run(handler,
  {"n": n}, timeout_s=900)``: in-process, virtual time, an in-memory store. CPU work takes no
  virtual time, so the whole loop is one hop with two checkpoint writes (the claim and the
  ``completed`` record); ``checkpoint_every_s`` (60 s) never comes due.
* SDK (``aws-durable-execution-sdk-python``): ``@durable_execution`` handler, one
  ``context.step(item(i))`` per item (``item`` a ``@durable_step`` returning ``i``), the total
  rebuilt from the step results as the SDK's replay model intends. Run by the SDK's own local
  runner (``aws-durable-execution-sdk-python-testing``), ``DurableFunctionTestRunner(handler)
  .run(input=..., execution_timeout=900)``: in-process, an in-memory execution store and
  checkpoint service, ``skip_time=True``. Each step sends a START (non-blocking) and a SUCCEED
  (blocking) checkpoint through the SDK's background batcher to that in-memory service.

LambdaSim is longrun's counterpart of that runner (both: a local stand-in for the platform, an
in-memory store, simulated time, the handler in this process), so it is the pair compared.
Each timed run is one fresh harness from construction to its result (``LambdaSim()`` /
``with DurableFunctionTestRunner(...)``), measured with ``time.perf_counter``; results are
checked after the clock stops. Runs of the two sides alternate, after one untimed warm-up of
each, and the medians are compared. The SDK's runner is slow at N = 10^4 (about a minute a
run here), so that size gets ``--repeat-large`` SDK runs (default 1: a median of one) to keep
the script under about two minutes; longrun always gets at least 5 runs.

Two more columns, to read the ratio by:

* ``longrun_checkpoint_each_s``: the longrun loop with ``run.checkpoint()`` after every item,
  i.e. the per-item durability a step gives. Idiomatic longrun does not do this: it checkpoints
  every ``checkpoint_every_s`` and at the end of a hop, and a crash re-runs the items since.
* ``sdk_in_handler_s``: the SDK side from the handler's first line to its return, without the
  runner's start-up, the final result checkpoint and the runner's assembly of its result object.

What this does not measure: real AWS. There every SDK checkpoint is a network call to the
durable-execution service, and every longrun checkpoint an S3 (or EFS) write; here both are
in-memory. Part of the SDK's cost is its own and would be there on AWS too: its checkpoint
batcher holds a blocking checkpoint for up to 1 ms in case more work joins the batch, so each
step takes at least about 1 ms of wall time. Another part belongs to the local runner only: its
in-memory service does work proportional to the number of operations so far on every
checkpoint, and assembles its result object in time quadratic in N, so the SDK's time here
grows faster than linearly with N.

The SDK is installed only for this benchmark (it needs Python >= 3.11):

    python -m pip install aws-durable-execution-sdk-python==3.0.0 \\
        aws-durable-execution-sdk-python-testing==1.4.0
    python bench/durable_compare.py [--sizes 1000,10000] [--repeat 5] [--repeat-large 1]

Without it the script prints why, and a JSON line with ``"skipped"``, and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from longrun import MemoryStore, current_run, longrun
from longrun.testing import LambdaSim

NAME = "durable_compare"
TIMEOUT_S = 900
LARGE_N = 10_000
MIN_LONGRUN_REPEAT = 5
SDK_PACKAGES = {
    "aws-durable-execution-sdk-python": "3.0.0",
    "aws-durable-execution-sdk-python-testing": "1.4.0",
}
PINS = " ".join(f"{name}=={version}" for name, version in SDK_PACKAGES.items())
INSTALL = f"{sys.executable} -m pip install {PINS}"


class Skip(Exception):
    """The SDK side cannot run here; the message says why."""


def expected(n: int) -> int:
    return n * (n - 1) // 2


# longrun


def longrun_runner(checkpoint_each: bool) -> Callable[[int], float]:
    """A function that runs the longrun job once for ``n`` items and returns its wall time."""

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        run.state.setdefault("total", 0)
        for i in run.iterate(range(event["n"])):
            run.state["total"] += i
            if checkpoint_each:
                run.checkpoint()
        return int(run.state["total"])

    return _timed(handler)


def steps_runner() -> Callable[[int], float]:
    """The SDK's job written with ``run.step``: one step per item, as ``context.step`` is
    (each step's result stored and checkpointed once it returned)."""

    def item(i: int) -> int:
        return i

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        run.state.setdefault("total", 0)
        for i in run.iterate(range(event["n"])):
            run.state["total"] += run.step("item", item, i)
        return int(run.state["total"])

    return _timed(handler)


def _timed(handler: Callable[..., Any]) -> Callable[[int], float]:
    """A function that runs ``handler`` once in a fresh simulator for ``n`` items and returns
    its wall time (the result checked after the clock stops)."""

    def run_once(n: int) -> float:
        start = time.perf_counter()
        outcome = LambdaSim(store="handler").run(handler, {"n": n}, timeout_s=TIMEOUT_S)
        elapsed = time.perf_counter() - start
        if outcome.status != "completed" or outcome.result != expected(n):
            raise RuntimeError(f"longrun run went wrong:\n{outcome.summary()}")
        return elapsed

    return run_once


def _waiting_job(store: MemoryStore, tokens: list[str]) -> Callable[..., Any]:
    @longrun(checkpoint=store)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        run.state.setdefault("total", 0)
        for i in run.iterate(range(event["n"])):
            run.state["total"] += run.step("item", int, i)
        tokens.append(run.callback("go"))
        run.wait_for_callback("go")
        return int(run.state["total"])

    return handler


def resume_after_steps(n: int, repeat: int) -> float:
    """Median wall time of the hop that resumes a run after ``n`` finished steps: the run
    waits for a callback once its steps are done, and the answer wakes it (recording the
    answer included)."""
    times: list[float] = []
    from longrun import status  # noqa: F401  (imported once, as a warm process has it)

    for _ in range(repeat):
        tokens: list[str] = []
        store = MemoryStore()
        handler = _waiting_job(store, tokens)

        sim = LambdaSim(store="handler")
        waiting = sim.run(handler, {"n": n}, timeout_s=TIMEOUT_S)
        if waiting.status != "waiting":
            raise RuntimeError(f"the resume run did not wait:\n{waiting.summary()}")
        # The simulator keeps a copy of every checkpoint written, for its report: N of them
        # here. A resumed Lambda process holds none, and the garbage collector walking them
        # would be the harness's cost, not the resume's: drop them before the clock starts.
        del sim._checkpoints[:-1]
        gc.collect()
        start = time.perf_counter()
        done = sim.send_callback(tokens[-1], True, store=store)
        times.append(time.perf_counter() - start)
        if done.status != "completed" or done.result != expected(n):
            raise RuntimeError(f"the resumed run went wrong:\n{done.summary()}")
    return statistics.median(times)


# the SDK


def sdk_runner() -> Callable[[int], tuple[float, float, int]]:
    """A function that runs the SDK job once for ``n`` items.

    It returns (wall time, time inside the handler, handler invocations). Raises Skip when
    the SDK or its local runner is missing or does not work here.
    """
    if sys.version_info < (3, 11):
        raise Skip(
            f"the durable-execution SDK needs Python >= 3.11, this is "
            f"{platform.python_version()}; on a 3.11+ interpreter install it with: "
            f"python -m pip install {PINS}"
        )
    try:
        from aws_durable_execution_sdk_python import (
            DurableContext,
            StepContext,
            durable_execution,
            durable_step,
        )
        from aws_durable_execution_sdk_python.execution import InvocationStatus
        from aws_durable_execution_sdk_python_testing import DurableFunctionTestRunner
    except ImportError as exc:
        raise Skip(
            f"the durable-execution SDK or its local runner is not installed ({exc}); "
            f"install them with: {INSTALL}"
        ) from exc

    handler_spans: list[tuple[float, float]] = []

    @durable_step
    def item(step_context: StepContext, i: int) -> int:
        return i

    @durable_execution
    def handler(event: Any, context: DurableContext) -> int:
        start = time.perf_counter()
        total = 0
        for i in range(event["n"]):
            total += context.step(item(i))
        handler_spans.append((start, time.perf_counter()))
        return total

    def run_once(n: int) -> tuple[float, float, int]:
        handler_spans.clear()
        try:
            start = time.perf_counter()
            with DurableFunctionTestRunner(handler=handler) as runner:
                result = runner.run(input=json.dumps({"n": n}), execution_timeout=TIMEOUT_S)
            elapsed = time.perf_counter() - start
        except Exception as exc:
            raise Skip(f"the SDK's local runner failed here: {type(exc).__name__}: {exc}") from exc
        if result.status is not InvocationStatus.SUCCEEDED:
            raise Skip(f"the SDK's local runner ended with {result.status}: {result.error}")
        if result.result is None or json.loads(result.result) != expected(n):
            raise Skip(f"the SDK's local runner returned {result.result!r}, not {expected(n)}")
        if len(result.operations) != n:
            raise Skip(f"the SDK's local runner recorded {len(result.operations)} steps, not {n}")
        in_handler = sum(end - begin for begin, end in handler_spans)
        return elapsed, in_handler, len(handler_spans)

    run_once(10)  # warm-up, and proof that the runner works here
    return run_once


# measurement


def measure(n: int, repeat: int, sdk: Callable[[int], tuple[float, float, int]]) -> dict[str, Any]:
    plain = longrun_runner(checkpoint_each=False)
    each = longrun_runner(checkpoint_each=True)
    steps = steps_runner()
    plain(10)  # warm-up
    each(10)
    steps(10)
    longrun_s: list[float] = []
    each_s: list[float] = []
    steps_s: list[float] = []
    sdk_s: list[float] = []
    handler_s: list[float] = []
    invocations: set[int] = set()

    def run_sdk() -> None:
        wall, inside, count = sdk(n)
        sdk_s.append(wall)
        handler_s.append(inside)
        invocations.add(count)

    longrun_repeat = max(repeat, MIN_LONGRUN_REPEAT)
    for k in range(longrun_repeat):
        sdk_turn = k < repeat
        if sdk_turn and k % 2:  # odd rounds: the SDK first
            run_sdk()
        longrun_s.append(plain(n))
        each_s.append(each(n))
        steps_s.append(steps(n))
        if sdk_turn and not k % 2:  # even rounds: longrun first
            run_sdk()
    longrun_med = statistics.median(longrun_s)
    sdk_med = statistics.median(sdk_s)
    each_med = statistics.median(each_s)
    steps_med = statistics.median(steps_s)
    return {
        "n": n,
        "longrun_s": round(longrun_med, 6),
        "sdk_s": round(sdk_med, 4),
        "ratio": round(sdk_med / longrun_med, 1),
        "longrun_checkpoint_each_s": round(each_med, 5),
        "ratio_vs_checkpoint_each": round(sdk_med / each_med, 1),
        "longrun_steps_s": round(steps_med, 5),
        "step_us": round(steps_med / n * 1e6, 2),
        "sdk_step_us": round(sdk_med / n * 1e6, 1),
        "ratio_vs_steps": round(sdk_med / steps_med, 1),
        "resume_after_steps_s": round(resume_after_steps(n, max(3, repeat)), 5),
        "sdk_in_handler_s": round(statistics.median(handler_s), 4),
        "sdk_invocations": sorted(invocations),
        "longrun_repeat": longrun_repeat,
        "sdk_repeat": repeat,
    }


def skip(reason: str) -> None:
    print(f"durable_compare: SKIPPED: {reason}")
    print(json.dumps({"name": NAME, "skipped": reason}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated item counts")
    parser.add_argument("--repeat", type=int, default=5, help="SDK runs per size below 10^4")
    parser.add_argument(
        "--repeat-large", type=int, default=1, help=f"SDK runs per size >= {LARGE_N}"
    )
    args = parser.parse_args()
    if args.repeat < 1 or args.repeat_large < 1:
        parser.error("--repeat and --repeat-large must be at least 1")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    try:
        sdk = sdk_runner()
    except Skip as exc:
        skip(str(exc))
        return

    results = []
    for n in sizes:
        repeat = args.repeat_large if n >= LARGE_N else args.repeat
        try:
            result = measure(n, repeat, sdk)
        except Skip as exc:
            skip(str(exc))
            return
        results.append(result)
        print(
            f"N={n:>6}: longrun {result['longrun_s'] * 1000:9.2f} ms, SDK "
            f"{result['sdk_s'] * 1000:10.1f} ms -> SDK/longrun x{result['ratio']} "
            f"(medians of {result['longrun_repeat']} / {result['sdk_repeat']} runs); "
            f"longrun checkpointing every item {result['longrun_checkpoint_each_s'] * 1000:.1f} "
            f"ms (x{result['ratio_vs_checkpoint_each']}); SDK inside its handler "
            f"{result['sdk_in_handler_s'] * 1000:.1f} ms; run.step {result['step_us']} us a step "
            f"against context.step {result['sdk_step_us']} us (x{result['ratio_vs_steps']}); "
            f"resume after the steps {result['resume_after_steps_s'] * 1000:.2f} ms"
        )

    versions = ", ".join(f"{name} {metadata.version(name)}" for name in SDK_PACKAGES)
    conditions = (
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}; "
        f"{versions}; longrun via LambdaSim (virtual time, MemoryStore, timeout {TIMEOUT_S} s); "
        f"SDK via DurableFunctionTestRunner (in-memory, skip_time=True, execution_timeout "
        f"{TIMEOUT_S} s); a fresh harness per run, wall time by perf_counter, runs alternated, "
        f"medians; SDK runs per size: {args.repeat} below {LARGE_N}, {args.repeat_large} from "
        f"{LARGE_N}; longrun runs: max(that, {MIN_LONGRUN_REPEAT})"
    )
    print(json.dumps({"name": NAME, "results": results, "conditions": conditions}))


if __name__ == "__main__":
    main()
