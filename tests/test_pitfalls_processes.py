"""Three pitfalls across real processes (the emulator: one awslambdaric process per hop, hash
randomisation differing between them): a mutated event, a set iterated by position, and a
``run.state`` replaced by a list. Counts come from a journal every process appends to."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from longrun.testing.emulator import LocalLambda

APP = Path(__file__).parent / "pitfall_app" / "app.py"


def run_mode(
    emulator: LocalLambda, tmp_path: Path, event: dict[str, Any], **deploy: Any
) -> tuple[Any, Counter[str], dict[str, Any]]:
    journal = tmp_path / f"journal-{event['mode']}.txt"
    journal.touch()
    function = emulator.deploy(
        f"{APP}:handler",
        name=f"pitfall-{event['mode'].replace('_', '-')}",
        env={"PITFALL_JOURNAL": str(journal), "LONGRUN_MIN_MARGIN_MS": "600"},
        timeout_s=1.5,
        escalate=False,
        retries=1,
        retry_delays_s=(0.2,),
        **deploy,
    )
    run_id = emulator.invoke(function, event)
    report = emulator.wait(timeout=120)
    run = report.run(run_id)
    lines = [line.split() for line in journal.read_text().splitlines()]
    ran = Counter(item for _pid, _mode, item in lines)
    assert function.store is not None
    document = function.store.status(run_id)
    return run, ran, document


def test_a_mutated_event_does_not_reach_later_hops(longrun_local: LocalLambda, tmp_path: Path):
    keys = [f"k{i:02}" for i in range(40)]
    run, ran, document = run_mode(longrun_local, tmp_path, {"mode": "mutate", "keys": keys})
    assert run.status == "completed", run
    assert run.lambda_hops > 1
    assert sorted(ran) == keys and set(ran.values()) == {1}
    assert document["event"] == {"mode": "mutate", "keys": keys}


def test_a_set_is_refused_and_sorted_runs_once_across_processes(
    longrun_local: LocalLambda, tmp_path: Path
):
    run, ran, document = run_mode(longrun_local, tmp_path, {"mode": "set"})
    assert run.status == "failed"
    assert "over a set" in document["error"]["message"]
    assert ran == Counter()  # refused before the first item, in every attempt

    run, ran, _ = run_mode(longrun_local, tmp_path, {"mode": "sorted_set"})
    assert run.status == "completed" and run.lambda_hops > 1
    assert len(ran) == 40 and set(ran.values()) == {1}


def test_a_state_that_is_not_a_dict_keeps_the_last_good_checkpoint(
    longrun_local: LocalLambda, tmp_path: Path
):
    run, ran, document = run_mode(longrun_local, tmp_path, {"mode": "bad_state"})
    assert run.status == "failed"
    assert document["error"]["type"] == "StateNotSerializable"
    assert "run.state is a list" in document["error"]["message"]
    assert isinstance(document["state"], dict)
    assert document["state"]["done"] == document["cursors"]["#0"]["pos"]  # one consistent save
    assert json.dumps(document)  # still a loadable checkpoint
    # Only the failed hop's unsaved items ran again, in Lambda's retry.
    assert all(count <= 2 for count in ran.values())
