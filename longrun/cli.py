"""The ``longrun`` command: look at and steer runs in a checkpoint store.

    longrun list   [--store URI]
    longrun status [--store URI] RUN_ID
    longrun cancel [--store URI] RUN_ID

``--store`` defaults to ``LONGRUN_CHECKPOINT_URI`` (``s3://bucket/prefix/`` or ``file:///path``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .config import ENV_CHECKPOINT_URI, env_store, store_from_uri
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
    args = parser.parse_args(argv)
    try:
        store = _store(args.store)
        if args.command == "list":
            for run_id in store.list_runs():
                print(run_id)
        elif args.command == "status":
            document = store.status(args.run_id)
            print(json.dumps(document if args.full else _summary(document), indent=2))
        else:
            document = store.cancel(args.run_id)
            print(f"run {args.run_id}: {document['status']}")
    except LongrunError as exc:
        print(f"longrun: {exc}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """Console-script entry point (``longrun``)."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
