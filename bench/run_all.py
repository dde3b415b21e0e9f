"""`make bench`: every figure, a table, ``bench/results.json`` and the figure-2 plot.

Each figure is one script of this folder (run alone for details). Here they run one after
the other, on this machine, side by side with their baselines; every entry in
``results.json`` has a name, a value, a unit and the conditions it was measured under.

    python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import checkpoint_cost  # noqa: E402
import cold_start  # noqa: E402
import hop_efficiency  # noqa: E402
import iterate_overhead  # noqa: E402
import list_runs  # noqa: E402
import resume_cost  # noqa: E402


def entry(
    figure: int, name: str, value: float, unit: str, conditions: str, **extra: Any
) -> dict[str, Any]:
    return {
        "figure": figure,
        "name": name,
        "value": value,
        "unit": unit,
        "conditions": conditions,
        **extra,
    }


def figure1(quick: bool) -> list[dict[str, Any]]:
    items, repeat = (200_000, 5) if quick else (1_000_000, 9)
    r = iterate_overhead.measure(items, repeat)
    cond = f"{items} items, empty body, ample time left, median of {repeat}, interleaved"
    return [
        entry(
            1,
            "iterate_overhead_ns_per_item",
            r["overhead_ns_per_item"],
            "ns/item",
            cond,
            target="< 250",
            iterate_ns=r["iterate_ns_per_item"],
            bare_ns=r["bare_ns_per_item"],
        ),
        entry(
            1,
            "iterate_over_passthrough_generator",
            r["ratio_vs_passthrough"],
            "ratio",
            cond + "; a `for x in it: yield x` generator over the same list",
            target="<= 2",
            iterate_ns=r["iterate_ns_per_item"],
            passthrough_ns=r["passthrough_ns_per_item"],
        ),
    ]


def figure2(quick: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    seeds = 5 if quick else 20
    rows = hop_efficiency.run_all(seeds)
    cond = (
        f"one-hour job, {hop_efficiency.TIMEOUT_S:.0f} s timeout, write {hop_efficiency.WRITE_S}"
        f" s, hand-off {hop_efficiency.HANDOFF_S} s, virtual time, {seeds} seeds, worst seed"
    )
    out = []
    for row in rows:
        key = f"{row['profile']}/{row['margin']}"
        out.append(
            entry(
                2,
                f"billed_over_useful[{key}]",
                row["billed_over_useful_max"],
                "ratio",
                cond,
                median=row["billed_over_useful_median"],
            )
        )
        out.append(
            entry(
                2,
                f"kills[{key}]",
                row["kills_total"],
                "hops",
                cond,
                unfinished_runs=row["unfinished_runs"],
            )
        )
        out.append(entry(2, f"hops_over_minimum[{key}]", row["hops_over_min_max"], "hops", cond))
        out.append(
            entry(
                2,
                f"redone_work[{key}]",
                row["redone_pct_max"],
                "%",
                cond,
                median=row["redone_pct_median"],
            )
        )
    return out, rows


def figure3(quick: bool) -> list[dict[str, Any]]:
    # a local disk's fsync varies more than moto's replies: the file writes get more rounds
    repeat, file_repeat = (3, 9) if quick else (9, 41)
    rows = checkpoint_cost.bench_s3(repeat) + checkpoint_cost.bench_file(file_repeat)
    out = []
    for r in rows:
        store = r["what"].split(".")[0]
        cond = (
            f"{r['what']}, {r['bytes']} bytes of many small dicts, codec {r['codec']}, median "
            f"of {r['repeat']}, moto server on 127.0.0.1 / local disk (ext4, fsync of file and "
            "dir)"
        )
        raw_target = {"target": "<= 1.15"} if r["state"] == "100 KB" else {}
        dumps_target = {"target": "<= 0.8"} if r["state"] in ("1 MB", "10 MB") else {}
        out.append(
            entry(
                3,
                f"save_ratio_vs_raw[{store} {r['state']}]",
                r["ratio"],
                "ratio",
                cond,
                ours_ms=r["ours_ms"],
                raw_ms=r["raw_ms"],
                **raw_target,
            )
        )
        out.append(
            entry(
                3,
                f"save_ratio_vs_dumps_and_raw[{store} {r['state']}]",
                r["ratio_vs_dumps_and_raw"],
                "ratio",
                cond,
                dumps_and_raw_ms=r["dumps_and_raw_ms"],
                **dumps_target,
            )
        )
    return out


def figure4(quick: bool) -> list[dict[str, Any]]:
    repeat = 5 if quick else 31
    out = []
    for r in resume_cost.run_all(repeat):
        cond = f"FileStore, a {r['iterable']}, hop start to first new item, median of {repeat}"
        out.append(
            entry(
                4,
                f"resume_ratio_1e6_over_1e3[{r['iterable']}]",
                r["ratio"],
                "ratio",
                cond,
                target="<= 1.1" if r["iterable"] == "list" else "(replayed: grows)",
                after_1e3_ms=r["after_1e3_ms"],
                after_1e6_ms=r["after_1e6_ms"],
            )
        )
    return out


def figure5(quick: bool) -> list[dict[str, Any]]:
    args = [sys.executable, str(HERE / "durable_compare.py")]
    if quick:
        args += ["--sizes", "1000", "--repeat", "2"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=400)
    last = json.loads(out.stdout.strip().splitlines()[-1])
    if "skipped" in last:
        return [entry(5, "durable_sdk_ratio", float("nan"), "ratio", last["skipped"], skipped=True)]
    return [
        entry(
            5,
            f"durable_sdk_over_longrun[N={r['n']}]",
            r["ratio"],
            "ratio",
            last["conditions"],
            longrun_s=r["longrun_s"],
            sdk_s=r["sdk_s"],
            ratio_vs_longrun_checkpointing_each_item=r["ratio_vs_checkpoint_each"],
        )
        for r in last["results"]
    ] + [
        entry(
            5,
            f"context_step_over_run_step[N={r['n']}]",
            r["ratio_vs_steps"],
            "ratio",
            last["conditions"] + "; run.step: one step per item, stored and checkpointed",
            target=">= 100",
            run_step_us=r["step_us"],
            context_step_us=r["sdk_step_us"],
            resume_after_steps_ms=round(r["resume_after_steps_s"] * 1000, 3),
        )
        for r in last["results"]
    ]


def figure9(quick: bool) -> list[dict[str, Any]]:
    args = [sys.executable, str(HERE / "fanout_compare.py")]
    args += ["--sizes", "1000", "--repeat", "1"] if quick else ["--sizes", "1000,10000"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    last = json.loads(out.stdout.strip().splitlines()[-1])
    results = []
    for r in last["rows"]:
        cond = (
            f"Python {last['python']}; {r['n']} items at max_concurrency {r['concurrency']}; "
            "longrun run.map in LambdaSim (MemoryStore counting bytes written: checkpoints, "
            "items, join record, index markers); SDK context.map in DurableFunctionTestRunner "
            "(bytes: JSON of the operation updates checkpointed); fresh harness per run, "
            f"sides alternated, median of {r['repeat']}"
        )
        if last["sdk_skipped"]:
            cond += f"; SDK side skipped: {last['sdk_skipped']}"
        results.append(
            entry(
                9,
                f"fanout_join_seconds[N={r['n']}]",
                r["longrun_s"],
                "s",
                cond,
                sdk_s=r.get("sdk_s"),
                time_ratio_sdk_over_longrun=r.get("time_ratio_sdk_over_longrun"),
            )
        )
        results.append(
            entry(
                9,
                f"fanout_join_bytes_per_item[N={r['n']}]",
                r["longrun_bytes_per_item"],
                "B/item",
                cond,
                longrun_bytes=r["longrun_bytes"],
                longrun_writes=r["longrun_writes"],
                sdk_bytes_per_item=r.get("sdk_bytes_per_item"),
                sdk_bytes=r.get("sdk_bytes"),
                sdk_checkpoints=r.get("sdk_checkpoints"),
            )
        )
    return results


def figure6(quick: bool) -> list[dict[str, Any]]:
    repeat = 5 if quick else 9
    r = cold_start.run_all(repeat)
    cond = f"python -X importtime, fresh processes, median of {repeat}"
    return [
        entry(
            6,
            "import_longrun_over_import_boto3",
            r["ratio"],
            "ratio",
            cond,
            import_longrun_ms=r["import_longrun_ms"],
            import_boto3_ms=r["import_boto3_ms"],
            boto_modules_imported_by_longrun=r["boto_modules_imported_by_longrun"],
        ),
    ]


def figure7(quick: bool) -> list[dict[str, Any]]:
    script = HERE / "handoff_latency.py"
    if not script.exists():
        return [
            entry(
                7,
                "handoff_latency_ms",
                float("nan"),
                "ms",
                "the local emulator is not built",
                skipped=True,
            )
        ]
    out = subprocess.run(
        [sys.executable, str(script)] + (["--quick"] if quick else []),
        capture_output=True,
        text=True,
        timeout=400,
    )
    last = json.loads(out.stdout.strip().splitlines()[-1])
    return [
        entry(
            7,
            "handoff_latency_ms",
            last["median_ms"],
            "ms",
            last["conditions"],
            **{k: v for k, v in last.items() if k not in ("median_ms", "conditions", "name")},
        )
    ]


def figure8(quick: bool) -> list[dict[str, Any]]:
    runs, repeat = (1_000, 1) if quick else (10_000, 3)
    r = list_runs.measure(runs, repeat)
    cond = (
        f"{r['runs']} runs ({r['live']} live) in a moto S3 bucket on 127.0.0.1, median of "
        f"{repeat}; reading every checkpoint: 8 threads over {list_runs.SAMPLE} runs, scaled"
    )
    return [
        entry(
            8,
            "longrun_list_s",
            r["cli_list_s"],
            "s",
            cond + "; `longrun list --json`, a new process",
            target="<= 3",
            runs=r["runs"],
        ),
        entry(8, "find_runs_s", r["find_runs_s"], "s", cond + "; in process", runs=r["runs"]),
        entry(
            8,
            "fetch_every_checkpoint_over_index",
            r["fetch_over_index"],
            "ratio",
            cond,
            fetch_every_checkpoint_s=r["fetch_every_checkpoint_s"],
        ),
    ]


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    profiles = ["constant", "uniform", "lognormal"]
    margins = list(hop_efficiency.MARGINS)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.25
    for i, margin in enumerate(margins):
        chosen = [
            next(r for r in rows if r["profile"] == p and r["margin"] == margin) for p in profiles
        ]
        xs = [x + (i - 1) * width for x in range(len(profiles))]
        left.bar(xs, [r["billed_over_useful_max"] for r in chosen], width, label=margin)
        right.bar(xs, [r["kills_total"] for r in chosen], width, label=margin)
    for axis, title in ((left, "billed / useful (worst seed)"), (right, "hops killed (all seeds)")):
        axis.set_xticks(range(len(profiles)), profiles)
        axis.set_title(title)
    left.set_ylim(0.99, max(1.06, left.get_ylim()[1]))
    left.axhline(1.03, color="grey", linestyle="--", linewidth=0.8)
    left.legend()
    fig.suptitle("One-hour job in 900 s Lambdas: adaptive against fixed margins")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    logging.getLogger("longrun").setLevel(logging.ERROR)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    results += figure1(args.quick)
    fig2, rows2 = figure2(args.quick)
    results += fig2
    results += figure3(args.quick)
    results += figure4(args.quick)
    results += figure5(args.quick)
    results += figure6(args.quick)
    results += figure7(args.quick)
    results += figure8(args.quick)
    results += figure9(args.quick)
    machine = f"{platform.python_version()} on {platform.machine()}, {platform.system()}"
    document = {
        "machine": machine,
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(document, indent=1))
    picture = Path(args.out).with_name("hop_efficiency.png")
    plotted = plot(rows2, picture)
    for r in results:
        target = f"  (target {r['target']})" if "target" in r else ""
        print(f"[{r['figure']}] {r['name']:<58} {r['value']!s:>10} {r['unit']}{target}")
    print(
        f"wrote {args.out}"
        + (" and bench/hop_efficiency.png" if plotted else " (no matplotlib: no plot)")
    )
    print(f"took {document['seconds']} s")


if __name__ == "__main__":
    main()
