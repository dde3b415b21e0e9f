"""Logs and metrics through Powertools, read from what real hop processes printed.

The emulator runs ``tests/observed_app/app.py`` in real awslambdaric processes (warm ones
reused, as Lambda does); every line a hop printed is kept with its invocation. The tests parse
those lines as JSON and check them field by field: longrun's own records (a Powertools
Logger), the user's records (their own Logger, given as ``logger=``), and one EMF blob per hop.
In-process tests cover what a process cannot show: keys removed after a hop, concurrent runs
in threads each logging their own keys, a bad ``logger=`` and a bad switch.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from longrun import LongrunConfigError, MemoryStore, current_run, longrun, observe
from longrun.testing import FakeContext, VirtualClock
from longrun.testing.emulator import LocalLambda

APP = f"{Path(__file__).parent / 'observed_app' / 'app.py'}:handler"
ENV = {
    "POWERTOOLS_SERVICE_NAME": "orders",
    "POWERTOOLS_METRICS_NAMESPACE": "Jobs",
    "POWERTOOLS_LOG_LEVEL": "INFO",
}
WAIT_S = 60.0


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def emf(blobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in blobs if "_aws" in b]


def values(blob: dict[str, Any], name: str) -> list[float]:
    value = blob[name]
    return value if isinstance(value, list) else [value]


def one(blob: dict[str, Any], name: str) -> float:
    [value] = values(blob, name)
    return value


def test_hop_logs_and_metrics_from_real_processes(longrun_local: LocalLambda) -> None:
    fn = longrun_local.deploy(APP, name="observed", timeout_s=1.6, env=ENV, escalate=False)
    first = longrun_local.invoke(fn, {"job": "job-1", "items": 24, "work_s": 0.1})
    longrun_local.wait(timeout=WAIT_S)
    # A second run on the (warm) environment the first one left.
    longrun_local.invoke(fn, {"job": "job-2", "items": 3, "work_s": 0.01})
    report = longrun_local.wait(timeout=WAIT_S)
    assert first

    hops_1 = [r for r in report.invocations if r.run_id == "job-1"]
    hops_2 = [r for r in report.invocations if r.run_id == "job-2"]
    assert len(hops_1) >= 2 and hops_1[-1].outcome == "completed"
    assert [r.outcome for r in hops_2] == ["completed"]
    assert any(not r.cold for r in hops_1[1:] + hops_2)  # warm environments were reused

    items_seen: list[int] = []
    for record in hops_1 + hops_2:
        lines = json_lines(record.log)
        keys = {
            "run_id": record.run_id,
            "hop": record.hop,
            "where": "lambda",
            "function_request_id": record.request_id,
        }
        # longrun's own records: a Powertools Logger's JSON, with the hop's keys.
        own = [line for line in lines if str(line.get("logger", "")).startswith("longrun")]
        started = [line for line in own if "started" in line["message"]]
        assert len(started) == 1, record.log
        for line in own:
            assert line["service"] == "orders"
            assert line["level"] in ("INFO", "WARNING", "ERROR")
            assert {k: line.get(k) for k in keys} == keys, line
        # The user's records through their own Logger carry the same keys, this hop's only.
        mine = [line for line in lines if line.get("message") == "item"]
        assert mine, record.log
        for line in mine:
            assert {k: line.get(k) for k in keys} == keys, line
            assert line["service"] == "orders"
        if record.run_id == "job-1":
            items_seen += [line["item"] for line in mine]
        # One EMF blob per hop, in the namespace asked for.
        [blob] = emf(lines)
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Jobs"
        assert sorted(directive["Dimensions"][0]) == ["function_name", "service"]
        assert blob["function_name"] == "observed" and blob["service"] == "orders"
        names = {m["Name"] for m in directive["Metrics"]}
        assert {"Hops", "Retries", "Continuations", "Escalations", "ItemsDone"} <= names
        assert {"CheckpointBytes", "CheckpointMs", "MarginMs", "UnusedMs"} <= names
        assert one(blob, "Hops") == 1 and one(blob, "Retries") == 0
        assert one(blob, "Escalations") == 0
        assert one(blob, "ItemsDone") == len(mine)
        # One size and one duration per write: the claim, the continue or complete, and any
        # checkpoint between them.
        sizes, times = values(blob, "CheckpointBytes"), values(blob, "CheckpointMs")
        assert len(sizes) == len(times) >= 2
        assert all(n > 100 for n in sizes) and all(t > 0 for t in times)
        assert one(blob, "MarginMs") == 600
        assert 0 < one(blob, "UnusedMs") < 1600
        continued = record.outcome == "continued"
        assert one(blob, "Continuations") == (1 if continued else 0)
        assert ("HandoffMs" in blob) == continued
        if continued:
            assert one(blob, "HandoffMs") > 0
    assert sorted(items_seen) == list(range(24))  # each item logged once, across the hops


def test_keys_leave_the_users_logger_when_the_hop_ends() -> None:
    stream = io.StringIO()
    user = Logger(service="keys-test", stream=stream)
    clock = VirtualClock()

    @longrun(checkpoint=MemoryStore(), run_id=lambda e: e["id"], logger=user)
    def handler(event: dict[str, Any], context: Any) -> str:
        user.info("inside")
        return current_run().id

    assert handler({"id": "r-1"}, FakeContext(clock, timeout_s=60)) == "r-1"
    user.info("after")
    inside, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "inside" and inside["run_id"] == "r-1" and inside["hop"] == 0
    assert after["message"] == "after" and not set(observe.HOP_KEYS) & set(after)


def test_concurrent_runs_in_threads_log_their_own_keys() -> None:
    stream = io.StringIO()
    user = Logger(service="threads-test", stream=stream)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    @longrun(checkpoint=MemoryStore(), run_id=lambda e: e["id"], logger=user)
    def handler(event: dict[str, Any], context: Any) -> None:
        for i in current_run().iterate(range(20)):
            if i == 0:
                barrier.wait(10)  # all six runs are inside their hop at once
            user.info("step", extra={"mine": event["id"], "i": i})

    def worker(k: int) -> None:
        try:
            handler({"id": f"t-{k}"}, FakeContext(VirtualClock(), timeout_s=60))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 120
    assert all(line["run_id"] == line["mine"] for line in lines)


def test_logger_must_be_a_powertools_logger() -> None:
    import logging

    with pytest.raises(LongrunConfigError, match=r"logger=<Logger plain .*Powertools Logger"):
        longrun(checkpoint=MemoryStore(), logger=logging.getLogger("plain"))(lambda e, c: None)


def test_a_bad_switch_fails_at_decoration_and_names_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def handler(event: Any, context: Any) -> None:
        return None

    monkeypatch.setenv(observe.ENV_METRICS, "sometimes")
    with pytest.raises(LongrunConfigError, match=r"LONGRUN_METRICS='sometimes' is not one of"):
        longrun(checkpoint=MemoryStore())(handler)
    monkeypatch.setenv(observe.ENV_METRICS, "off")
    monkeypatch.setenv(observe.ENV_LOG_FORMAT, "xml")
    with pytest.raises(LongrunConfigError, match=r"LONGRUN_LOG_FORMAT='xml' is not one of"):
        longrun(checkpoint=MemoryStore())(handler)


def test_a_retried_hop_counts_as_a_retry(longrun_local: LocalLambda) -> None:
    from longrun.testing.emulator import InvocationRecord

    killed: list[InvocationRecord] = []

    def kill_after(record: InvocationRecord) -> float | None:
        if not killed and record.event_hop == 1 and record.attempt == 1:
            killed.append(record)
            return 0.5  # SIGKILL halfway through hop 1's first attempt
        return None

    fn = longrun_local.deploy(
        APP,
        name="observed-retry",
        timeout_s=1.6,
        env=ENV,
        escalate=False,
        retry_delays_s=(1.8, 1.8),  # after the killed hop's claim has expired
        kill_after=kill_after,
    )
    longrun_local.invoke(fn, {"job": "job-r", "items": 24, "work_s": 0.1})
    report = longrun_local.wait(timeout=WAIT_S)
    hops = [r for r in report.invocations if r.run_id == "job-r"]
    assert hops[-1].outcome == "completed"
    [dead] = [r for r in hops if r.outcome == "killed"]
    assert not emf(json_lines(dead.log))  # killed before its hop ended: no blob
    [retry] = [r for r in hops if r.kind == "retry"]
    assert retry.request_id == dead.request_id and retry.hop == 1
    retried = {r.request_id for r in hops if r.kind == "retry"}
    for record in hops:
        if record.outcome == "killed":
            continue
        [blob] = emf(json_lines(record.log))
        assert one(blob, "Retries") == (1 if record.request_id in retried else 0), record.kind
