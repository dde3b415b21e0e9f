"""The ``longrun`` command: look at and steer runs in a checkpoint store.

    longrun list   [--store URI]
    longrun status [--store URI] RUN_ID
    longrun cancel [--store URI] RUN_ID
    longrun resume [--store URI] RUN_ID [--fargate] [--function ARN]

``--store`` defaults to ``LONGRUN_CHECKPOINT_URI`` (``s3://bucket/prefix/`` or ``file:///path``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .config import ENV_CHECKPOINT_URI, env_store, resolve_fargate, store_from_uri
from .errors import LongrunError
from .stores.base import CheckpointStore

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


def _resume(store: CheckpointStore, run_id: str, *, fargate: bool, function: str | None) -> int:
    from .resume import resume_in_fargate, resume_in_lambda

    if fargate:
        target = resolve_fargate(True)
        assert target is not None
        done = resume_in_fargate(store, target, run_id, reason="longrun resume")
    else:
        done = resume_in_lambda(store, run_id, function=function)
    print(json.dumps({k: v for k, v in vars(done).items() if v is not None}))
    return 0 if done.action != "skipped" else 3


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``longrun`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="longrun", description="Look at and steer runs in a checkpoint store."
    )
    parser.add_argument("--store", help=f"checkpoint store URI (default: ${ENV_CHECKPOINT_URI})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the runs in the store")
    status = commands.add_parser("status", help="print a run's checkpoint summary as JSON")
    status.add_argument("run_id")
    status.add_argument("--full", action="store_true", help="print the whole checkpoint")
    cancel = commands.add_parser("cancel", help="cancel a run: its next hop does not run")
    cancel.add_argument("run_id")
    resume = commands.add_parser(
        "resume", help="carry on a failed or stuck run (not a live, completed or cancelled one)"
    )
    resume.add_argument("run_id")
    resume.add_argument(
        "--fargate", action="store_true", help="in a Fargate task (LONGRUN_FARGATE_* settings)"
    )
    resume.add_argument("--function", help="function to invoke (default: the run's own)")
    args = parser.parse_args(argv)
    try:
        store = _store(args.store)
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
            return _resume(store, args.run_id, fargate=args.fargate, function=args.function)
    except LongrunError as exc:
        print(f"longrun: {exc}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """Console-script entry point (``longrun``)."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
