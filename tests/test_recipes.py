"""The run-id recipes (examples/recipes/run_ids.py, shown in docs/concepts.md): a repeated
start of the same job (an SQS redelivery, a client's retry, a second Invoke) answers with the
existing run and runs no item twice."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from longrun.testing import LambdaSim

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def recipes(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("run_ids", ROOT / "examples/recipes/run_ids.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_ids", module)
    spec.loader.exec_module(module)
    return module


SQS = {"Records": [{"messageId": "5fea7756-0ea4-451a-a703-a558b933e274", "body": "30"}]}
API = {
    "headers": {"Idempotency-Key": "order 42 / retry-safe"},
    "queryStringParameters": {"n": "30"},
}
DIRECT = {"job_id": "nightly-2026-12-02", "items": list(range(30))}


@pytest.mark.parametrize(
    ("name", "event"),
    [("sqs_handler", SQS), ("api_handler", API), ("direct_handler", DIRECT)],
)
def test_a_repeated_start_answers_with_the_existing_run(
    recipes: Any, monkeypatch: pytest.MonkeyPatch, name: str, event: dict[str, Any]
) -> None:
    ran: Counter[Any] = Counter()

    def process(item: Any) -> None:
        ran[item] += 1
        time.sleep(1)  # virtual time in the simulator

    monkeypatch.setattr(recipes, "process", process)
    handler = getattr(recipes, name)
    sim = LambdaSim()  # one in-memory store for both starts, as one bucket in production
    first = sim.run(handler, event, timeout_s=10)
    again = sim.run(handler, event, timeout_s=10, store=first.store)

    assert first.status == "completed" and first.result == {"done": 30}
    assert len(first.hops) > 2
    [answer] = [r.response for r in again.invocations]
    assert answer["longrun"]["existing"] is True
    assert answer["longrun"]["status"] == "completed"
    assert answer["longrun"]["result"] == {"done": 30}
    assert sorted(ran) == list(range(30)) and set(ran.values()) == {1}
    assert answer["longrun"]["run_id"] == first.run_id


def test_run_ids_are_valid_whatever_the_key(recipes: Any) -> None:
    from longrun.checkpoint import validate_run_id

    for event in (API, {"headers": {"idempotency-key": "ü" * 500}}):
        assert validate_run_id(recipes.api_run_id(event)).startswith("api-")
    with pytest.raises(ValueError, match="batch size 1"):
        recipes.sqs_run_id({"Records": [SQS["Records"][0]] * 2})
