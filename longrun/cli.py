"""The ``longrun`` command: look at and steer runs in a checkpoint store.

    longrun list   [--store URI]
    longrun status [--store URI] RUN_ID
    longrun cancel [--store URI] RUN_ID
    longrun resume [--store URI] RUN_ID [--fargate] [--function ARN] [--force]
    longrun local  FILE.py:handler|package.module:handler [--event FILE] [--timeout S]
                   [--max-hops N] [--store s3://BUCKET/PREFIX/] [--json] [--retries N]
                   [--duplicate-rate R] [--seed S] [--env NAME=VALUE] [--no-fargate] [--logs]

``--store`` defaults to ``LONGRUN_CHECKPOINT_URI`` (``s3://bucket/prefix/`` or ``file:///path``).
``local`` runs a handler on the process-level Lambda emulator (``longrun.testing.emulator``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ENV_CHECKPOINT_URI, env_store, resolve_fargate, store_from_uri
from .errors import LongrunError
from .protocol import Status
from .stores.base import CheckpointStore

if TYPE_CHECKING:
    from .testing.emulator import InvocationRecord

__all__ = ["main"]


def _store(uri: str | None) -> CheckpointStore:
    return store_from_uri(uri, name="--store") if uri else env_store()


def _summary(document: dict[str, Any]) -> dict[str, Any]:
    keep = ("run_id", "status", "hop", "next", "created_ms", "updated_ms", "error", "result")
    summary = {k: document.get(k) for k in keep}
    hops = document.get("hops") or []
    summary["hops"] = len(hops)
    summary["items"] = sum(int(h.get("items") or 0) for h in hops)
    return summary


def _resume(
    store: CheckpointStore, run_id: str, *, fargate: bool, function: str | None, force: bool
) -> int:
    from .resume import resume_in_fargate, resume_in_lambda

    if fargate:
        target = resolve_fargate(True)
        assert target is not None
        done = resume_in_fargate(store, target, run_id, reason="longrun resume", force=force)
    else:
        done = resume_in_lambda(store, run_id, function=function, force=force)
    print(json.dumps({k: v for k, v in vars(done).items() if v is not None}))
    # 3: nothing to do (finished, already handed off); 4: a live claim, try after its lease.
    return {"skipped": 3, "busy": 4}.get(done.action, 0)


def _event(source: str | None) -> Any:
    if source is None:
        return {}
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    return json.loads(text)


def _env_pairs(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise LongrunError(f"--env {pair!r}: use NAME=VALUE")
        env[name] = value
    return env


def _local(args: argparse.Namespace) -> int:
    """``longrun local``: run a handler on the emulator, hop by hop, and report."""
    from .testing.emulator import LocalLambda

    try:
        event = _event(args.event)
    except (OSError, ValueError) as exc:
        raise LongrunError(f"--event {args.event}: {exc}") from None
    out = sys.stderr if args.json else sys.stdout
    delays = tuple(float(d) for d in args.retry_delays.split(",") if d.strip())

    def show(record: InvocationRecord) -> None:
        print(record.line(), file=out, flush=True)

    def log(line: str) -> None:
        platform = line.startswith(("START ", "END ", "REPORT ", "  "))
        if args.logs or not platform:
            print(line, file=out, flush=True)

    with LocalLambda(
        workdir=args.workdir,
        seed=args.seed,
        on_record=show,
        log=log,
        echo_logs=args.logs,
    ) as emulator:
        function = emulator.deploy(
            args.handler,
            timeout_s=args.timeout,
            memory_mb=args.memory,
            env=_env_pairs(args.env or []),
            store=args.local_store or getattr(args, "store", None),
            max_hops=args.max_hops,
            retries=args.retries,
            retry_delays_s=delays,
            duplicate_rate=args.duplicate_rate,
            escalate=not args.no_fargate,
        )
        print(
            f"longrun local: {function.handler} from {function.code_dir}, timeout "
            f"{function.timeout_s:g}s, checkpoints {function.store_uri}",
            file=out,
            flush=True,
        )
        emulator.invoke(function, event)
        try:
            report = emulator.wait(timeout=args.wait)
            settled = True
        except TimeoutError:
            report, settled = emulator.report(), False
            print(f"longrun local: not settled after {args.wait:g}s; stopping", file=out)
    for run in report.runs:
        for line in run.lines():
            print(line, file=out)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    completed = bool(report.runs) and all(r.status == Status.COMPLETED for r in report.runs)
    return 0 if settled and completed else 1


def _local_parser(commands: Any) -> None:
    local = commands.add_parser(
        "local",
        help="run a handler on the local Lambda emulator (real awslambdaric processes)",
        description="Run a handler as Lambda would: one awslambdaric process per invocation, "
        "killed at the timeout, hops through a local Invoke API, escalations to local "
        "Fargate tasks (moto). Prints each hop as it happens and a summary.",
    )
    local.add_argument(
        "handler", help="FILE.py:function, package.module:function or package.module.function"
    )
    local.add_argument("--event", help="event JSON file, '-' for stdin (default: {})")
    local.add_argument("--timeout", type=float, default=3.0, help="function timeout in seconds")
    local.add_argument("--memory", type=int, default=128, help="memory size in MB (reported)")
    local.add_argument("--max-hops", type=int, help="LONGRUN_MAX_HOPS for the function")
    local.add_argument(
        "--store",
        dest="local_store",
        help="checkpoints: s3://BUCKET/PREFIX/ (S3 in a local moto) or file:///PATH "
        "(default: a directory under --workdir)",
    )
    local.add_argument("--json", action="store_true", help="print the report as JSON")
    local.add_argument("--retries", type=int, default=2, help="async retries (default 2)")
    local.add_argument(
        "--retry-delays", default="0.5,1", help="seconds before each retry (default 0.5,1)"
    )
    local.add_argument(
        "--duplicate-rate", type=float, default=0.0, help="deliver events twice, 0..1"
    )
    local.add_argument("--seed", type=int, help="seed of the duplicate deliveries")
    local.add_argument(
        "--env", action="append", metavar="NAME=VALUE", help="a function variable (repeat)"
    )
    local.add_argument("--no-fargate", action="store_true", help="no escalation target")
    local.add_argument("--logs", action="store_true", help="show the function's output")
    local.add_argument("--workdir", help="where checkpoints go (default: a new temp dir)")
    local.add_argument("--wait", type=float, default=900.0, help="give up after this many seconds")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``longrun`` console script; returns the exit status."""
    # --store is accepted before or after the subcommand: each parser knows it, and the one
    # given last wins (SUPPRESS: an absent option does not overwrite a given one).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        help=f"checkpoint store URI (default: ${ENV_CHECKPOINT_URI})",
    )
    parser = argparse.ArgumentParser(
        prog="longrun",
        description="Look at and steer runs in a checkpoint store.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the runs in the store", parents=[common])
    status = commands.add_parser(
        "status", help="print a run's checkpoint summary as JSON", parents=[common]
    )
    status.add_argument("run_id")
    status.add_argument("--full", action="store_true", help="print the whole checkpoint")
    cancel = commands.add_parser(
        "cancel", help="cancel a run: its next hop does not run", parents=[common]
    )
    cancel.add_argument("run_id")
    resume = commands.add_parser(
        "resume",
        help="carry on a failed or stuck run (not a live, completed or cancelled one)",
        parents=[common],
    )
    resume.add_argument("run_id")
    resume.add_argument(
        "--fargate", action="store_true", help="in a Fargate task (LONGRUN_FARGATE_* settings)"
    )
    resume.add_argument("--function", help="function to invoke (default: the run's own)")
    resume.add_argument(
        "--force",
        action="store_true",
        help="also take over a run escalated to a task you know is gone (never a live claim)",
    )
    _local_parser(commands)
    args = parser.parse_args(argv)
    try:
        if args.command == "local":
            return _local(args)
        store = _store(getattr(args, "store", None))
        if args.command == "list":
            for run_id in store.list_runs():
                print(run_id)
        elif args.command == "status":
            document = store.status(args.run_id)
            print(json.dumps(document if args.full else _summary(document), indent=2))
        elif args.command == "cancel":
            document = store.cancel(args.run_id)
            print(f"run {args.run_id}: {document['status']}")
        else:
            return _resume(
                store, args.run_id, fargate=args.fargate, function=args.function, force=args.force
            )
    except LongrunError as exc:
        print(f"longrun: {exc}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """Console-script entry point (``longrun``)."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
