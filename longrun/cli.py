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
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .cli_show import Progress, parse_duration, run_table, span, status_text, summary_json, when
from .config import ENV_CHECKPOINT_URI, env_store, resolve_fargate, store_from_uri
from .errors import LongrunConfigError, LongrunError, RunNotFound
from .protocol import Checkpoint, Status
from .status import STATUSES, RunInfo, RunSummary, find_runs
from .stores.base import CheckpointStore, Loaded

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
    as_json = bool(getattr(args, "json", False))
    out = sys.stderr if as_json else sys.stdout
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
        fast_waits=args.fast_waits,
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
    if as_json:
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
    local.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the report as JSON"
    )
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
    local.add_argument(
        "--fast-waits",
        action="store_true",
        help="skip waits: when only wake-ups are pending, the clock jumps to the next one",
    )
    local.add_argument("--logs", action="store_true", help="show the function's output")
    local.add_argument("--workdir", help="where checkpoints go (default: a new temp dir)")
    local.add_argument("--wait", type=float, default=900.0, help="give up after this many seconds")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``longrun: ...``) and exit status 2, like every error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _common() -> _Parser:
    """Options every command takes, before or after its name: each parser knows them, and
    the one given last wins (SUPPRESS: an absent option does not overwrite a given one)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        help=f"checkpoint store URI (default: ${ENV_CHECKPOINT_URI})",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        prog="longrun",
        description="Look at and steer runs in a checkpoint store.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    listing = commands.add_parser(
        "list", help="the runs in the store, newest first", parents=[common]
    )
    listing.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help=f"only runs with this status (repeat, or comma-separated): {', '.join(STATUSES)}",
    )
    listing.add_argument("--since", help="only runs started this long ago or later: 1h, 30d")
    listing.add_argument("--limit", type=int, help="at most this many runs (the newest)")
    listing.add_argument("--parent", metavar="RUN_ID", help="only the child runs of run.map")
    status = commands.add_parser(
        "status", help="a run: its event, hops, loops, result or error", parents=[common]
    )
    status.add_argument("run_id")
    status.add_argument("--full", action="store_true", help="print the whole checkpoint (JSON)")
    watch = commands.add_parser(
        "watch",
        help="follow a live run with a progress bar until it settles",
        description="Follow a run until it settles. Exit status: 0 completed, 1 failed, "
        "3 cancelled, 4 still running when --timeout ran out, 2 an error.",
        parents=[common],
    )
    watch.add_argument("run_id")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between reads")
    watch.add_argument("--timeout", help="give up after this long: 90s, 2h (default: never)")
    gc = commands.add_parser(
        "gc",
        help="delete settled runs older than an age (never a live one)",
        parents=[common],
    )
    gc.add_argument("--older-than", required=True, help="age since the run settled: 30d, 12h")
    gc.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    answer = commands.add_parser(
        "callback",
        help="answer a run's callback (run.callback) and wake the run",
        parents=[common],
    )
    answer.add_argument("token", help="the token run.callback() returned")
    payload = answer.add_mutually_exclusive_group(required=True)
    payload.add_argument("--payload", metavar="JSON", help="the answer, a JSON value")
    payload.add_argument("--fail", metavar="MESSAGE", help="answer with a failure")
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
    return parser


def _now_ms() -> int:
    from .ports import active  # (the emulator's clock, when it skips waits)

    return active().clock.wall_ms()


def _list(store: CheckpointStore, args: argparse.Namespace, as_json: bool) -> int:
    statuses = [s.strip() for given in args.status or () for s in given.split(",") if s.strip()]
    if args.limit is not None and args.limit < 1:
        raise LongrunConfigError(f"--limit {args.limit}: give a positive number of runs.")
    now = _now_ms()
    since = None if args.since is None else now - int(parse_duration(args.since, "--since") * 1000)
    if args.parent is not None and store.load(args.parent) is None:
        raise RunNotFound(f"no run {args.parent!r} in {store.describe()} (--parent).")
    runs = find_runs(store, status=statuses, since_ms=since, limit=args.limit, parent=args.parent)
    if as_json:
        print(json.dumps([summary_json(r) for r in runs], indent=2))
    elif runs:
        print(run_table(runs, now))
    else:
        matching = statuses or since or args.parent
        print(f"no runs in {store.describe()}" + (" that match" if matching else ""))
    return 0


def _loaded(store: CheckpointStore, run_id: str) -> Loaded:
    loaded = store.load(run_id)
    if loaded is None:
        raise RunNotFound(f"no run {run_id!r} in {store.describe()}.")
    return loaded


def _status(store: CheckpointStore, args: argparse.Namespace, as_json: bool) -> int:
    loaded = _loaded(store, args.run_id)
    if args.full:
        print(json.dumps(loaded.document, indent=2))
    elif as_json:
        from .join import children_counts

        summary = _summary(loaded.document)
        children = children_counts(store, loaded.checkpoint)
        if children:
            summary["children"] = children
        print(json.dumps(summary, indent=2))
    else:
        from .join import children_counts

        children = children_counts(store, loaded.checkpoint)
        print(status_text(loaded.checkpoint, loaded.size, _now_ms(), children))
    return 0


_WATCH_EXIT = {Status.COMPLETED: 0, Status.FAILED: 1, Status.CANCELLED: 3}
_APPEAR_S = 30.0
"""How long ``watch`` waits for a run that does not exist yet (just started, asynchronously)."""


def _watch(store: CheckpointStore, args: argparse.Namespace, as_json: bool) -> int:
    if args.interval <= 0:
        raise LongrunConfigError(f"--interval {args.interval:g}: give a positive number.")
    timeout = None if args.timeout is None else parse_duration(args.timeout, "--timeout")
    start = time.monotonic()
    tty = sys.stdout.isatty() and not as_json
    shown = ""
    while True:
        loaded = store.load(args.run_id)
        waited = time.monotonic() - start
        if loaded is None:
            if waited > min(_APPEAR_S, timeout if timeout is not None else _APPEAR_S):
                raise RunNotFound(
                    f"no run {args.run_id!r} in {store.describe()} (waited {span(waited)})."
                )
        else:
            checkpoint = loaded.checkpoint
            if as_json:
                line = json.dumps(summary_json(RunSummary.of(RunInfo.of(checkpoint))))
            else:
                line = Progress.line(checkpoint, _now_ms())
            if tty:
                print("\r" + line + "\x1b[K", end="", flush=True)
            elif line != shown:
                print(line, flush=True)
            shown = line
            if checkpoint.status in _WATCH_EXIT:
                if tty:
                    print()
                if not as_json:
                    print(_settled_line(checkpoint))
                return _WATCH_EXIT[checkpoint.status]
        if timeout is not None and waited >= timeout:
            if tty:
                print()
            print(
                f"longrun watch: {args.run_id} has not settled after {span(waited)}",
                file=sys.stderr,
            )
            return 4
        time.sleep(args.interval)


def _settled_line(checkpoint: Checkpoint) -> str:
    info = RunInfo.of(checkpoint)
    took = span((info.updated_ms - info.started_ms) / 1000)
    line = f"run {info.run_id} {info.status} after {info.hop + 1} hop(s), {took}"
    error = checkpoint.error
    if error is not None and checkpoint.status is Status.FAILED:
        line += f": {error.type}: {_one_line(error.message)[:200]}"
    return line


def _gc(store: CheckpointStore, args: argparse.Namespace, as_json: bool) -> int:
    from .gc import collect_garbage

    age = parse_duration(args.older_than, "--older-than")
    done = collect_garbage(store, older_than_s=age, now_ms=_now_ms(), dry_run=args.dry_run)
    if as_json:
        print(json.dumps(asdict(done), indent=2))
        return 0
    verb = "would delete" if done.dry_run else "deleted"
    for run_id in done.deleted:
        print(f"{verb} {run_id}")
    for run_id, why in done.kept.items():
        print(f"kept {run_id}: {why}")
    summary = (
        f"{verb} {len(done.deleted)} run(s) settled before {when(done.cutoff_ms)} UTC; "
        f"kept {len(done.kept)}"
    )
    if done.orphans:
        summary += f"; removed the index entries of {len(done.orphans)} run(s) with no checkpoint"
    print(summary)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``longrun`` console script; returns the exit status.

    Every error is one line on stderr (``longrun: ...``) and a non-zero status, never a
    traceback: 2 for a longrun error (an unknown run, a bad option, no store, a store
    error), 1 for anything unexpected, 130 when interrupted.
    """
    args = _parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    try:
        if args.command == "local":
            return _local(args)
        store = _store(getattr(args, "store", None))
        if args.command == "list":
            return _list(store, args, as_json)
        if args.command == "status":
            return _status(store, args, as_json)
        if args.command == "watch":
            return _watch(store, args, as_json)
        if args.command == "gc":
            return _gc(store, args, as_json)
        if args.command == "callback":
            return _callback(store, args, as_json)
        if args.command == "cancel":
            before = store.load(args.run_id)
            document = store.cancel(args.run_id)
            _drop_wake(before, document)
            if as_json:
                print(json.dumps(_summary(document), indent=2))
            else:
                print(f"run {args.run_id}: {document['status']}")
            return 0
        return _resume(
            store, args.run_id, fargate=args.fargate, function=args.function, force=args.force
        )
    except LongrunError as exc:
        print(f"longrun: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback: the type and message, on one line
        print(f"longrun: unexpected {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


def _callback(store: CheckpointStore, args: argparse.Namespace, as_json: bool) -> int:
    from .callbacks import fail_callback, parse_token, send_callback

    run_id, name, _ = parse_token(args.token)
    if args.fail is not None:
        done = fail_callback(args.token, args.fail, store=store)
    else:
        try:
            value = json.loads(args.payload)
        except ValueError as exc:
            raise LongrunConfigError(
                f"--payload {args.payload[:60]!r} is not JSON ({exc}); quote it for the shell, "
                """e.g. --payload '{"approved": true}'."""
            ) from None
        done = send_callback(args.token, value, store=store)
    if as_json:
        print(json.dumps({"run_id": run_id, "callback": name, "answer": done}))
    else:
        print(f"run {run_id}: callback {name!r} {done}")
    return 0


def _drop_wake(before: Loaded | None, document: dict[str, Any]) -> None:
    """A cancelled run that was waiting: delete its wake-up schedule (best effort: a wake-up
    that fires anyway finds the run cancelled and runs nothing)."""
    if before is None or document.get("status") != Status.CANCELLED.value:
        return
    wait = before.checkpoint.wait
    if before.checkpoint.status is not Status.WAITING or not wait or not wait.get("schedule"):
        return
    from .handoff.scheduler import delete_schedule

    try:
        delete_schedule(str(wait["schedule"]))
    except Exception as exc:
        print(f"longrun: the wake-up {wait['schedule']} was not deleted ({exc}); it will find "
              "the run cancelled", file=sys.stderr)  # fmt: skip


def _one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 500 else text[:499] + "…"


def run() -> None:
    """Console-script entry point (``longrun``)."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
