"""The ``longrun`` command as a subprocess, on runs made by real hops: ``list`` (table,
filters, JSON) on moto S3 and on a FileStore, a readable ``status``, ``watch`` in a
pseudo-terminal over a live multi-hop run in the emulator, ``gc`` next to a live run, and
errors as one line."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from clitool import cli

from longrun import FileStore, S3Store, current_run, get_run, longrun
from longrun.gc import collect_garbage
from longrun.stores.base import CheckpointStore
from longrun.testing import LambdaSim
from longrun.testing.emulator import LocalLambda

APP = f"{Path(__file__).parent / 'observed_app' / 'app.py'}:handler"




def job(store: CheckpointStore) -> Any:
    @longrun(checkpoint=store, run_id=lambda event: event["id"], min_margin_ms=1000)
    def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
        run = current_run()
        for i in run.iterate(range(event["items"]), name="scan"):
            if i == event.get("fail_at"):
                raise ValueError(f"item {i} is bad")
            time.sleep(event.get("item_s", 1.0))  # virtual time: 4 items a hop
        return {"items": event["items"]}

    return handler


def make_runs(store: CheckpointStore) -> None:
    """Three settled runs and a live one (its hop killed, not retried yet), made by hops."""
    sim = LambdaSim(store="handler")
    handler = job(store)
    sim.run(handler, {"id": "r-0", "items": 10}, timeout_s=5.0, retries=0)
    sim.run(handler, {"id": "r-1", "items": 10, "fail_at": 6}, timeout_s=5.0, retries=0)
    sim.run(handler, {"id": "r-2", "items": 3}, timeout_s=5.0, retries=0)
    sim.run(handler, {"id": "r-3", "items": 4, "item_s": 100.0}, timeout_s=5.0, retries=0)


@pytest.fixture(params=["s3", "file"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[CheckpointStore, str, dict]:
    """A store holding runs, its URI, and the environment the command needs to reach it."""
    if request.param == "file":
        store: CheckpointStore = FileStore(tmp_path / "store")
        uri, env = f"file://{tmp_path / 'store'}", {}
    else:
        client = request.getfixturevalue("s3_client")
        bucket = request.getfixturevalue("bucket")
        store = S3Store(bucket, prefix="jobs/", client=client)
        uri = f"s3://{bucket}/jobs/"
        env = {"AWS_ENDPOINT_URL_S3": request.getfixturevalue("moto_server")}
    make_runs(store)
    return store, uri, env


def rows(table: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in table.strip().splitlines()[1:]]


def test_list_is_a_table_with_filters_and_json(where: tuple[CheckpointStore, str, dict]) -> None:
    store, uri, env = where
    listed = cli("--store", uri, "list", env=env)
    assert listed.returncode == 0, listed.stderr
    header = listed.stdout.splitlines()[0].split()
    assert header[:5] == ["RUN", "ID", "STATUS", "HOP", "WHERE"] and header[-1] == "AGE"
    table = rows(listed.stdout)
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in table] == [  # newest first
        ("r-3", "running", "0", "lambda", "0"),
        ("r-2", "completed", "0", "lambda", "3"),
        ("r-1", "failed", str(get_run("r-1", store=store).hop), "lambda",
         str(get_run("r-1", store=store).items_done)),
        ("r-0", "completed", "2", "lambda", "10"),
    ]  # fmt: skip
    started = get_run("r-0", store=store).started_ms
    assert table[-1][5] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started / 1000))

    failed = cli("list", "--status", "failed", "--store", uri, env=env)
    assert [r[0] for r in rows(failed.stdout)] == ["r-1"]
    both = cli("list", "--status", "completed,running", "--limit", "2", "--store", uri, env=env)
    assert [r[0] for r in rows(both.stdout)] == ["r-3", "r-2"]
    # The simulator's runs started on 2026-01-01 (virtual time): none in the last hour.
    recent = cli("list", "--since", "1h", "--store", uri, "--json", env=env)
    assert json.loads(recent.stdout) == []
    old = cli("list", "--since", "3650d", "--store", uri, "--json", env=env)
    runs = json.loads(old.stdout)
    assert [r["run_id"] for r in runs] == ["r-3", "r-2", "r-1", "r-0"]
    assert runs[3] == {
        "run_id": "r-0", "status": "completed", "hop": 2, "where": "lambda", "items_done": 10,
        "started_ms": started, "updated_ms": get_run("r-0", store=store).updated_ms,
        "settled": True,
    }  # fmt: skip


def test_status_is_readable_and_json_on_request(where: tuple[CheckpointStore, str, dict]) -> None:
    store, uri, env = where
    shown = cli("--store", uri, "status", "r-1", env=env)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    info = get_run("r-1", store=store)
    assert f"status    failed, hop {info.hop} in lambda" in text
    assert 'event     {"id":"r-1","items":10,"fail_at":6}' in text
    hop_lines = [
        line.split() for line in text.splitlines() if re.match(r"^\s+\d+\s+1\s+lambda", line)
    ]
    assert [line[0] for line in hop_lines] == [str(h) for h in range(info.hop + 1)]
    assert [line[-1] for line in hop_lines] == ["continued"] * info.hop + ["failed"]
    assert f"loops     scan: at item {info.items_done} of 10" in text
    assert "error     ValueError: item 6 is bad" in text
    assert re.search(r"state     \d+ B \(checkpoint \d+\.\d KB\)", text)
    done = cli("--store", uri, "status", "r-0", env=env).stdout
    assert 'result    {"items":10}' in done and "loops     scan: done 10 of 10" in done
    as_json = json.loads(cli("--store", uri, "status", "r-0", "--json", env=env).stdout)
    assert as_json["status"] == "completed" and as_json["result"] == {"items": 10}


def test_a_long_event_is_cut_short(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    LambdaSim(store="handler").run(job(store), {"id": "big", "items": 1, "blob": "x" * 5000})
    text = cli("--store", f"file://{tmp_path}", "status", "big").stdout
    [event] = [line for line in text.splitlines() if line.startswith("event")]
    assert len(event) < 230 and event.endswith("…")


def read_pty(master: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the other side closed
            return
        if not chunk:
            return
        into.append(chunk)


def test_watch_follows_a_live_multi_hop_run_in_a_terminal(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    uri = f"file://{tmp_path / 'store'}"
    fn = longrun_local.deploy(APP, name="watched", timeout_s=1.6, store=uri, escalate=False, env={})
    longrun_local.invoke(fn, {"job": "w-1", "items": 40, "work_s": 0.1})
    master, slave = pty.openpty()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "longrun.cli", "watch", "w-1", "--interval", "0.1"],
        stdout=slave,
        stderr=slave,
        env={**os.environ, "LONGRUN_CHECKPOINT_URI": uri},
    )
    os.close(slave)
    seen: list[bytes] = []
    reader = threading.Thread(target=read_pty, args=(master, seen), daemon=True)
    reader.start()
    code = watcher.wait(timeout=120)
    reader.join(10)
    os.close(master)
    longrun_local.wait(timeout=60)
    out = b"".join(seen).decode()
    assert code == 0, out
    frames = [f for f in re.split(r"[\r\n]+", out) if f.startswith("[")]
    percents = [int(m.group(1)) for f in frames if (m := re.search(r"\]\s+(\d+)%", f))]
    assert percents == sorted(percents) and percents[-1] == 100
    assert len(set(percents)) >= 3  # it moved while the run ran
    hops = {int(m.group(1)) for f in frames if (m := re.search(r"hop (\d+) ", f))}
    assert len(hops) >= 2 and max(hops) >= 1  # it followed the run across hops
    assert "40/40 items" in frames[-1] and "completed in lambda" in frames[-1]
    assert "\x1b[K" in out  # redrawn in place, as a terminal shows it
    info = get_run("w-1", store=uri)
    assert f"run w-1 completed after {info.hop + 1} hop(s)" in out


def test_watch_exit_code_says_how_the_run_ended(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    make_runs(store)
    uri = f"file://{tmp_path}"
    done = cli("--store", uri, "watch", "r-0")
    assert done.returncode == 0 and "run r-0 completed after 3 hop(s)" in done.stdout
    assert "[" + "#" * 30 + "] 100% 10/10 items" in done.stdout
    failed = cli("--store", uri, "watch", "r-1")
    assert failed.returncode == 1 and "ValueError: item 6 is bad" in failed.stdout
    store.cancel("r-3")
    assert cli("--store", uri, "watch", "r-3").returncode == 3
    LambdaSim(store="handler").run(job(store), {"id": "r-4", "items": 4, "item_s": 100.0},
                                   timeout_s=5.0, retries=0)  # fmt: skip
    waiting = cli("--store", uri, "watch", "r-4", "--timeout", "1s", "--interval", "0.2")
    assert waiting.returncode == 4 and "r-4 has not settled after" in waiting.stderr
    as_json = cli("--store", uri, "watch", "r-0", "--json")
    last = json.loads(as_json.stdout.splitlines()[0])
    assert last["status"] == "completed" and last["items_done"] == 10


def test_gc_deletes_old_settled_runs_next_to_a_live_one(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    uri = f"file://{root}"
    make_runs(FileStore(root))  # settled r-0, r-1, r-2 and a stranded live r-3
    fn = longrun_local.deploy(APP, name="gc-live", timeout_s=1.6, store=uri, escalate=False, env={})
    longrun_local.invoke(fn, {"job": "live", "items": 30, "work_s": 0.1})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and get_run_or_none("live", uri) is None:
        time.sleep(0.05)

    dry = cli("--store", uri, "gc", "--older-than", "1h", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True and sorted(planned["deleted"]) == ["r-0", "r-1", "r-2"]
    assert sorted(os.listdir(root)) == ["_runs", "live", "r-0", "r-1", "r-2", "r-3"]

    collected = cli("--store", uri, "gc", "--older-than", "0s")
    assert collected.returncode == 0, collected.stderr
    assert "deleted 3 run(s)" in collected.stdout
    assert "kept r-3: live (running, hop 0)" in collected.stdout
    report = longrun_local.wait(timeout=90)
    info = get_run("live", store=uri)
    assert info.status == "completed" and info.items_done == 30  # untouched by gc
    items = [
        json.loads(line)["item"]
        for record in report.invocations
        if record.run_id == "live"
        for line in record.log
        if line.startswith("{") and '"message":"item"' in line.replace(" ", "")
    ]
    assert sorted(items) == list(range(30))  # each item once across its hops
    assert sorted(os.listdir(root)) == ["_runs", "live", "r-3"]
    listed = json.loads(cli("--store", uri, "list", "--json").stdout)
    assert [r["run_id"] for r in listed] == ["live", "r-3"]


def get_run_or_none(run_id: str, uri: str) -> Any:
    from longrun import RunNotFound

    try:
        return get_run(run_id, store=uri)
    except RunNotFound:
        return None


def test_gc_leaves_a_failed_run_that_is_resumed_meanwhile(tmp_path: Path) -> None:
    """A resume lands between gc's read and its fenced write: gc keeps the run."""
    from longrun import ports
    from longrun.resume import resume_in_lambda
    from longrun.testing import RecordingTransport

    class RacingStore(FileStore):
        def load(self, run_id: str) -> Any:
            loaded = super().load(run_id)
            if run_id == "r-1" and not raced:
                raced.append(True)
                with ports.installed(transport=RecordingTransport()):
                    resume_in_lambda(FileStore(tmp_path), run_id, function="f")
            return loaded

    raced: list[bool] = []
    make_runs(FileStore(tmp_path))
    done = collect_garbage(RacingStore(tmp_path), older_than_s=0, now_ms=int(time.time() * 1000))
    assert raced and done.kept["r-1"].startswith("it changed while being collected")
    assert sorted(done.deleted) == ["r-0", "r-2"]
    assert get_run("r-1", store=FileStore(tmp_path)).status == "continued"


def test_errors_are_one_line_never_a_traceback(tmp_path: Path, moto_server: str) -> None:
    uri = f"file://{tmp_path}"
    cases = [
        (("--store", uri, "status", "ghost"), "no run 'ghost'"),
        (("--store", uri, "list", "--since", "yesterday"), "--since 'yesterday': use a number"),
        (("--store", uri, "gc", "--older-than", "3days"), "--older-than '3days'"),
        (("--store", uri, "list", "--status", "done"), "status 'done' is not one of"),
        (("--store", uri, "list", "--limit", "0"), "--limit 0"),
        (("--store", "s3://no-such-bucket-here/x/", "list"), "NoSuchBucket"),
        (("--store", uri, "watch", "../etc"), "is not a valid run id"),
        (("--store", uri, "list", "--limit", "many"), "invalid int value: 'many'"),
        (("--store", uri, "frobnicate"), "invalid choice: 'frobnicate'"),
    ]
    for args, expected in cases:
        done = cli(*args, env={"AWS_ENDPOINT_URL_S3": moto_server})
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
