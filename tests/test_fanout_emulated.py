"""``run.map`` with real processes: 20 children of a real ``awslambdaric`` function at a
concurrency of 4, one child SIGKILLed midway and retried by the emulator's Lambda retry.
Asserted on the journal the children append to, the parent's result and the records of the
invocations (how many children ran at once)."""

from __future__ import annotations

from pathlib import Path

from longrun import get_run
from longrun.fanout import child_run_id, map_digest
from longrun.testing.emulator import InvocationRecord, LocalLambda

APP = """
import os
import time
from pathlib import Path

from longrun import current_run, longrun

JOURNAL = Path(os.environ["JOURNAL"])


def note(what, i):
    with JOURNAL.open("a") as journal:
        journal.write(f"{what} {i} {time.time():.6f}\\n")


def work(i):
    note("start", i)
    marker = JOURNAL.with_name(f"started-{i}")
    if i == 7 and not marker.exists():  # the first attempt of child 7 hangs: it is killed
        marker.touch()
        time.sleep(60)
    time.sleep(0.2)
    note("done", i)
    return i * i


@longrun(run_id=lambda event: event.get("id"))
def handler(event, context):
    run = current_run()
    if "i" in event:
        return {"square": run.step("work", work, event["i"])}
    results = run.map("squares", [{"i": i} for i in range(20)], max_concurrency=4)
    return {"sum": sum(r["square"] for r in results)}
"""

PARENT = "fan-1"


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most half-open intervals ``[start, end)`` that overlap."""
    edges = sorted(edge for start, end in spans for edge in ((start, 1), (end, -1)))
    live = peak = 0
    for _, change in edges:  # at one instant an end (-1) comes before a start (+1)
        live += change
        peak = max(peak, live)
    return peak


def work_spans(lines: list[list[str]]) -> list[tuple[float, float]]:
    """When each child's work was under way: from its ``start`` line to its ``done`` line, or
    to its next ``start`` (a killed attempt: the child counts as running until its retry
    starts over)."""
    spans: list[tuple[float, float]] = []
    opened: dict[str, float] = {}
    for what, i, at in sorted(lines, key=lambda line: float(line[2])):
        if i in opened:
            spans.append((opened.pop(i), float(at)))
        if what == "start":
            opened[i] = float(at)
    return spans


def test_twenty_children_at_four_one_sigkilled_and_retried(
    longrun_local: LocalLambda, tmp_path: Path
) -> None:
    (tmp_path / "fan.py").write_text(APP)
    journal = tmp_path / "journal.txt"
    digest = map_digest(PARENT, "squares")
    victim = child_run_id(PARENT, digest, 7)
    kills: list[InvocationRecord] = []

    def kill_after(record: InvocationRecord) -> float | None:
        if record.run_id == victim and record.attempt == 1 and not kills:
            kills.append(record)
            return 1.0  # well inside its 60 s hang: a SIGKILL mid-work
        return None

    fn = longrun_local.deploy(
        f"{tmp_path / 'fan.py'}:handler",
        name="fan",
        timeout_s=3.0,
        store=f"file://{tmp_path / 'store'}",
        escalate=False,
        env={"JOURNAL": str(journal)},
        # a retry comes after the killed hop's lease (its 3 s deadline) ran out
        retry_delays_s=(4.0, 4.0),
        kill_after=kill_after,
    )
    longrun_local.invoke(fn, {"id": PARENT})
    report = longrun_local.wait(timeout=240)

    parent = [r for r in report.invocations if r.run_id == PARENT]
    assert [r.outcome for r in parent] == ["waiting", "completed"], report
    assert parent[-1].response == {"sum": sum(i * i for i in range(20))}
    # each child's work ran once (the killed attempt never got to write its line)
    lines = [line.split() for line in journal.read_text().splitlines()]
    assert sorted(int(i) for what, i, _ in lines if what == "done") == list(range(20))
    [killed] = [r for r in report.invocations if r.outcome == "killed"]
    assert killed.run_id == victim and killed.reason == "SIGKILL injected"
    retried = [r for r in report.invocations if r.run_id == victim and r.kind == "retry"]
    assert retried and retried[-1].outcome == "completed"
    children = [r for r in report.invocations if r.run_id and r.run_id != PARENT]
    assert {r.run_id for r in children} == {child_run_id(PARENT, digest, i) for i in range(20)}
    assert 2 <= most_at_once(work_spans(lines)) <= 4  # in parallel, never more than max_concurrency
    store = f"file://{tmp_path / 'store'}"
    assert get_run(PARENT, store=store).status == "completed"
    assert all(get_run(r, store=store).status == "completed" for r in {c.run_id for c in children})
