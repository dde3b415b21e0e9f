"""Every code example of the docs is a file that a test runs (docs/contributing-docs.md).

A page never holds a Python example itself: it includes a file with ``--8<-- "PATH"``
(``pymdownx.snippets``, see ``mkdocs.yml``). The files under ``examples/docs/`` are either
modules, imported here and their handlers run in the simulator (one ``test_<file name>...``
each), or pytest files (``*_test.py``), run here in pytest sessions of their own.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import re
import shutil
import time
import tokenize
import uuid
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from longrun import LongrunConfigError, MemoryStore, current_run, longrun, ports
from longrun.protocol.document import Answer, Status
from longrun.testing import FakeContext, Faults, LambdaSim, RecordingTransport, VirtualClock

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples" / "docs"
MODULES = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.endswith("_test.py"))
TEST_FILES = sorted(EXAMPLES.glob("*_test.py"))

INCLUDE = re.compile(r'^\s*-{1,}8<-{1,}\s+"([^"]+)"\s*$')
FENCE_OPEN = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")


def load(path: Path) -> ModuleType:
    """A fresh module from ``path``: a test gets the example's module state new."""
    spec = importlib.util.spec_from_file_location(f"docs_example_{uuid.uuid4().hex}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example(name: str) -> ModuleType:
    return load(EXAMPLES / f"{name}.py")


def fenced_blocks(text: str) -> list[tuple[str, list[str], int]]:
    """``(language, lines, line number)`` of every fenced block in a Markdown text. A block
    closes at a fence of the same character at least as long as the one that opened it, so
    a ```` ```` ```` block may show a ```` ``` ```` block inside it."""
    blocks: list[tuple[str, list[str], int]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = FENCE_OPEN.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, language, start = opened.group(1), opened.group(2).lower(), i + 1
        body: list[str] = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            body.append(lines[i])
            i += 1
        blocks.append((language, body, start))
        i += 1
    return blocks


def includes() -> dict[str, list[str]]:
    """Page name -> every ``--8<--`` path it includes (``FILE`` or ``FILE:SECTION``)."""
    found: dict[str, list[str]] = {}
    for page in sorted(DOCS.glob("*.md")):
        for _language, body, _line in fenced_blocks(page.read_text()):
            for line in body:
                match = INCLUDE.match(line)
                if match:
                    found.setdefault(page.name, []).append(match.group(1))
    return found


# -- the convention ----------------------------------------------------------------------------


def test_no_page_writes_a_python_example_inline() -> None:
    inline = []
    for page in sorted(DOCS.glob("*.md")):
        for language, body, line in fenced_blocks(page.read_text()):
            if language not in ("python", "py", "python3"):
                continue
            code = [text for text in body if text.strip() and not INCLUDE.match(text)]
            if code:
                inline.append(f"docs/{page.name}:{line}: {code[0].strip()}")
    assert not inline, (
        "Python examples written in a page; move each to a file under examples/docs/ and "
        'include it with --8<-- "examples/docs/NAME.py" (docs/contributing-docs.md):\n'
        + "\n".join(inline)
    )


def test_every_include_names_an_existing_file_and_section() -> None:
    for page, paths in includes().items():
        for target in paths:
            path, _, section = target.partition(":")
            file = ROOT / path
            assert file.is_file(), f"docs/{page} includes {path}, which does not exist"
            if section:
                text = file.read_text()
                for marker in (f"--8<-- [start:{section}]", f"--8<-- [end:{section}]"):
                    assert marker in text, f"docs/{page}: {path} has no `{marker}`"


def test_every_example_file_is_included_by_a_page() -> None:
    included = {target.partition(":")[0] for paths in includes().values() for target in paths}
    orphans = [
        p.relative_to(ROOT).as_posix()
        for p in MODULES + TEST_FILES
        if p.relative_to(ROOT).as_posix() not in included
    ]
    assert not orphans, f"no page includes {orphans}"


def test_every_example_module_has_its_test() -> None:
    tests = [name for name in globals() if name.startswith("test_")]
    missing = [p.name for p in MODULES if not any(t.startswith(f"test_{p.stem}") for t in tests)]
    assert not missing, f"add a test_<name> to tests/test_docs_examples.py for {missing}"


@pytest.mark.parametrize("path", MODULES + TEST_FILES, ids=lambda p: p.name)
def test_every_example_file_executes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (a bare @longrun takes its store from the environment, as in a deployed function)
    monkeypatch.setenv("LONGRUN_CHECKPOINT_URI", "s3://my-bucket/longrun/")
    # (and a notification target from the function's configuration)
    monkeypatch.setenv("DONE_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/q")
    load(path)


# -- the pytest files --------------------------------------------------------------------------


def run_test_files(pytester: pytest.Pytester, files: list[Path], *extra: Path) -> None:
    """Run ``files`` as they are in one pytest session; every test in them passes."""
    for path in [*files, *extra]:
        shutil.copy(path, pytester.path / path.name)
    tests = sum(len(re.findall(r"^def test_", path.read_text(), re.M)) for path in files)
    assert tests
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *(path.name for path in files)
    )  # fmt: skip
    result.assert_outcomes(passed=tests)


def test_the_simulator_test_files_pass(pytester: pytest.Pytester) -> None:
    """docs/testing.md's test files: the example test file, the arguments of ``run``, the
    per-test settings, a replaced port."""
    run_test_files(pytester, [p for p in TEST_FILES if p.name.startswith("testing_")])


def test_the_emulator_test_file_passes(pytester: pytest.Pytester) -> None:
    """docs/local.md's ``longrun_local`` test, next to the emulator example's handler."""
    emulator = ROOT / "examples" / "emulator"
    run_test_files(
        pytester,
        [EXAMPLES / "local_emulator_test.py"],
        *(emulator / name for name in ("app.py", "job.py", "crashhook.py")),
    )


def test_every_pytest_file_has_a_session() -> None:
    covered = {"local_emulator_test.py"} | {
        p.name for p in TEST_FILES if p.name.startswith("testing_")
    }
    assert {p.name for p in TEST_FILES} <= covered


# -- the modules, one test (or more) each ------------------------------------------------------


def same_code(a: str, b: str) -> bool:
    """The same statements and the same comments, however formatted."""

    def comments(code: str) -> list[str]:
        tokens = tokenize.generate_tokens(io.StringIO(code).readline)
        return [t.string for t in tokens if t.type == tokenize.COMMENT]

    return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b)) and comments(a) == comments(b)


def test_index_handler_is_the_readme_handler(longrun_sim: LambdaSim) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Decorate a handler") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match and same_code(match.group(1), (EXAMPLES / "index_handler.py").read_text()), (
        "docs/index.md shows the README's handler: keep examples/docs/index_handler.py and "
        "the README's '## Decorate a handler' block the same"
    )
    app = example("index_handler")
    ran: Counter[str] = Counter()

    def process(key: str) -> None:
        ran[key] += 1
        time.sleep(20)

    app.process = process
    keys = [f"logs/{i:04}.gz" for i in range(50)]
    outcome = longrun_sim.run(app.handler, {"keys": keys}, timeout_s=300)
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == {"done": 50} and len(outcome.hops) > 3
    assert ran == Counter(keys)


def test_getting_started_handler_takes_its_store_from_the_environment(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(LongrunConfigError, match="LONGRUN_CHECKPOINT_URI"):
        example("getting_started_handler")

    monkeypatch.setenv("LONGRUN_CHECKPOINT_URI", tmp_path.as_uri())
    app = example("getting_started_handler")
    ran: Counter[str] = Counter()

    def process(key: str) -> None:
        ran[key] += 1
        time.sleep(10)

    app.process = process
    keys = [f"k{i}" for i in range(40)]
    outcome = longrun_sim.run(app.handler, {"keys": keys}, timeout_s=60, store="handler")
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == {"done": 40} and len(outcome.hops) > 3
    assert ran == Counter(keys)
    assert (tmp_path / outcome.run_id / "checkpoint.json").is_file()


def test_getting_started_stores_each_decorate_a_handler(longrun_sim: LambdaSim) -> None:
    app = example("getting_started_stores")
    for handler in (app.handler, app.other_handler, app.third_handler):
        outcome = longrun_sim.run(handler, {}, timeout_s=60)
        assert outcome.status == "completed", outcome.summary()


def test_concepts_manual_loop_hops(longrun_sim: LambdaSim) -> None:
    app = example("concepts_manual_loop")
    outcome = longrun_sim.run(app.handler, {}, timeout_s=20)
    assert outcome.status == "completed" and outcome.result == 30, outcome.summary()
    assert all(r.outcome != "killed" for r in outcome.invocations)
    assert len(outcome.hops) >= 4


def test_concepts_nested_loops_resume_inside_an_outer_item(longrun_sim: LambdaSim) -> None:
    app = example("concepts_nested_loops")
    outcome = longrun_sim.run(app.handler, {}, timeout_s=7)
    assert outcome.status == "completed" and outcome.result == 40, outcome.summary()
    assert len(outcome.hops) > 4
    assert set(app.setup) == {0, 1, 2, 3}
    assert max(app.setup.values()) > 1  # a hop resumed inside a file: its setup ran again


def keys_of(response: dict[str, Any]) -> set[str]:
    return set(response["longrun"])


def test_concepts_responses_match_real_answers(longrun_sim: LambdaSim) -> None:
    documented = example("concepts_responses")
    statuses = {a.value for a in Answer}

    @longrun(checkpoint=MemoryStore(), run_id=lambda event: event["job"])
    def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
        run = current_run()
        for _ in run.iterate(range(event["n"])):
            time.sleep(1)
        return {"done": event["n"]}

    # continued, resent (a crash between the continued write and the hand-off), duplicate
    outcome = longrun_sim.run(
        handler,
        {"job": "job-1", "n": 30},
        timeout_s=10,
        faults=Faults(duplicate="during", duplicate_request_id="new", crash_before_handoff={0}),
    )
    assert outcome.status == "completed", outcome.summary()
    answers = [r.response for r in outcome.invocations if isinstance(r.response, dict)]
    answers = [a for a in answers if "longrun" in a]  # (the last hop returns the result)
    continued = [a for a in answers if a["longrun"]["status"] == "continued"]
    resent = [a for a in continued if a["longrun"].get("resent")]
    continued = [a for a in continued if a not in resent]
    duplicate = [a for a in answers if a["longrun"]["status"] == "duplicate"]
    assert continued and resent and duplicate, outcome.summary()
    assert keys_of(documented.continued) == keys_of(continued[0])
    assert documented.continued["longrun"]["next"] == continued[0]["longrun"]["next"]
    assert keys_of(documented.resent) == keys_of(resent[0])
    assert keys_of(documented.duplicate) == keys_of(duplicate[0])

    # existing: the same job started again, on the same store
    store = MemoryStore()
    event = {"job": "job-7", "n": 3}
    first = longrun_sim.run(handler, event, timeout_s=60, store=store)
    assert first.status == "completed"
    again = longrun_sim.run(handler, event, timeout_s=60, store=store)
    assert again.invocations[0].response == documented.existing

    # cancelled: the next hop of a cancelled run does not start
    cancel_store = MemoryStore()

    @longrun(checkpoint=cancel_store, run_id=lambda event: event["job"])
    def hopping(event: dict[str, Any], context: Any) -> str:
        run = current_run()
        run.state["started"] = True  # progress: the hop may hand off
        run.end_hop()
        return "never"

    transport = RecordingTransport()
    clock = VirtualClock()
    with ports.installed(transport=transport):
        hopping({"job": "job-9"}, FakeContext(clock, timeout_s=60))
        cancel_store.cancel("job-9")
        answer = hopping(transport.next("job-9"), FakeContext(clock, timeout_s=60))
    assert keys_of(documented.cancelled) == keys_of(answer)
    assert answer["longrun"]["status"] == "cancelled"

    # superseded is not produced here; its shape is the common one
    assert keys_of(documented.superseded) == {"run_id", "status", "hop"}
    for name in ("continued", "resent", "duplicate", "superseded", "cancelled"):
        assert getattr(documented, name)["longrun"]["status"] in statuses
    assert documented.existing["longrun"]["status"] in {s.value for s in Status}


def test_concepts_async_handler_resumes_by_position(longrun_sim: LambdaSim) -> None:
    app = example("concepts_async_handler")
    outcome = longrun_sim.run(app.handler, {"n": 25}, timeout_s=8)
    assert outcome.status == "completed", outcome.summary()
    assert app.processed == list(range(25))
    assert len(outcome.hops) >= 4


def test_concepts_powertools_order_runs(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (a service of its own: Powertools keeps one configured logger per service name)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"docs-{uuid.uuid4().hex[:8]}")
    app = example("concepts_powertools_order")
    outcome = longrun_sim.run(app.handler, {"id": 1}, timeout_s=60)
    assert outcome.status == "completed", outcome.summary()


def test_configuration_decorator_runs(longrun_sim: LambdaSim) -> None:
    app = example("configuration_decorator")
    outcome = longrun_sim.run(app.handler, {}, timeout_s=60)
    assert outcome.status == "completed", outcome.summary()


def test_fargate_escalate_decorates_and_runs(longrun_sim: LambdaSim) -> None:
    app = example("fargate_escalate")
    outcome = longrun_sim.run(app.handler, {}, timeout_s=60)
    assert outcome.status == "completed", outcome.summary()


def test_observability_logger_records_carry_the_hop_keys(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"docs-{uuid.uuid4().hex[:8]}")
    app = example("observability_logger")
    outcome = longrun_sim.run(app.handler, {"keys": ["a", "b"]}, timeout_s=60)
    assert outcome.status == "completed", outcome.summary()
    records = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"copied"' in line
    ]
    assert [r["key"] for r in records] == ["a", "b"]
    for record in records:
        assert record["run_id"] == outcome.run_id and record["hop"] == 0
        assert record["where"] == "lambda" and record["function_request_id"]


def test_observability_idempotency_records_the_job(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"docs-{uuid.uuid4().hex[:8]}")
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(
            TableName="idempotency",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        app = example("observability_idempotency")
        outcome = longrun_sim.run(app.handler, {"job_id": "job-1"}, timeout_s=60)
        assert outcome.status == "completed", outcome.summary()
        assert outcome.run_id == "job-1"
        [item] = dynamodb.scan(TableName="idempotency")["Items"]
        assert item["status"]["S"] == "COMPLETED"


def test_testing_faults_lose_nothing(longrun_sim: LambdaSim) -> None:
    faults = example("testing_faults").faults
    done: Counter[str] = Counter()

    @longrun(checkpoint=MemoryStore())
    def handler(event: dict[str, Any], context: Any) -> int:
        run = current_run()
        for key in run.iterate(event["keys"], key=str):
            time.sleep(1)
            done[key] += 1
        return len(event["keys"])

    keys = [f"k{i}" for i in range(60)]
    outcome = longrun_sim.run(handler, {"keys": keys}, timeout_s=15, faults=faults)
    assert outcome.status == "completed" and outcome.result == 60, outcome.summary()
    assert set(done) == set(keys)
    kinds = Counter(r.kind for r in outcome.invocations)
    assert kinds["duplicate"] and kinds["retry"], outcome.summary()


def test_notifications_queue_sends_one_message(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="jobs-done")["QueueUrl"]
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="docs-notify")
        monkeypatch.setenv("DONE_QUEUE_URL", url)
        monkeypatch.setenv("BUCKET", "docs-notify")
        app = example("notifications_queue")
        outcome = longrun_sim.run(app.handler, {"pages": 5}, timeout_s=60)
        assert outcome.status == "completed", outcome.summary()
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        [message] = [json.loads(m["Body"]) for m in got]
        assert message["status"] == "completed" and message["result"] == {"pages": 5}


def test_notifications_callable_posts_once(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = example("notifications_callable")
    posted: list[dict[str, Any]] = []

    def urlopen(request: Any, timeout: float) -> None:
        posted.append(json.loads(request.data))

    monkeypatch.setattr(app.urllib.request, "urlopen", urlopen)
    outcome = longrun_sim.run(app.handler, {"items": 3}, timeout_s=60)
    assert outcome.status == "completed", outcome.summary()
    assert len(posted) == 1 and posted[0]["text"].startswith(f"run {outcome.run_id} done in")


def test_steps_rate_limited_calls_each_customer_once(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = example("steps_rate_limited")
    calls: Counter[str] = Counter()
    real = app.enrich

    def throttled(customer_id: str) -> dict[str, Any]:
        calls[customer_id] += 1
        if customer_id == "c-2" and calls[customer_id] < 3:
            raise app.RateLimited("429")
        return dict(real(customer_id))

    monkeypatch.setattr(app, "enrich", throttled)
    outcome = longrun_sim.run(app.handler, {"customers": ["c-1", "c-2", "c-3"]}, timeout_s=20)
    assert outcome.status == "completed" and outcome.result == {"enriched": 3}
    assert calls == Counter({"c-1": 1, "c-2": 3, "c-3": 1})
    assert [h.kind for h in outcome.hops].count("wake") >= 1  # a backoff outlived the hop


def test_steps_polling_sleeps_between_checks_without_compute(longrun_sim: LambdaSim) -> None:
    app = example("steps_polling")
    outcome = longrun_sim.run(app.handler, {"table": "orders"}, timeout_s=60)
    assert outcome.status == "completed"
    assert outcome.result == {"job": "export-orders", "status": "SUCCEEDED", "checks": 3}
    assert [h.kind for h in outcome.hops] == ["start", "wake", "wake"]
    assert len(longrun_sim.schedules) == 2


def test_steps_approval_waits_for_the_answer_with_no_compute(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = example("steps_approval")
    asked: list[str] = []
    monkeypatch.setattr(app, "ask_for_approval", lambda report, token: asked.append(token))
    waiting = longrun_sim.run(app.handler, {"month": "2026-11"}, timeout_s=60)
    assert waiting.status == "waiting" and len(asked) == 1
    done = longrun_sim.send_callback(asked[0], {"approved": True})
    assert done.status == "completed"
    assert done.result == {"month": "2026-11", "published": True}
    assert len(asked) == 1  # asked once, though the handler ran twice


def test_fanout_etl_indexes_every_prefix_once_in_child_runs(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="my-bucket")
        s3.create_bucket(Bucket="data")
        sizes = {}
        for p in range(12):
            for k in range(p % 4 + 1):
                body = b"x" * (10 * p + k)
                s3.put_object(Bucket="data", Key=f"raw/day-{p:02d}/part-{k}.json", Body=body)
                sizes[f"raw/day-{p:02d}/"] = sizes.get(f"raw/day-{p:02d}/", 0) + len(body)
        app = example("fanout_etl")
        puts: Counter[str] = Counter()
        real_put = app.s3.put_object

        def put_object(**kwargs: Any) -> Any:
            puts[kwargs["Key"]] += 1
            return real_put(**kwargs)

        monkeypatch.setattr(app.s3, "put_object", put_object)
        longrun_sim.store = "handler"  # the example's own S3Store, on moto
        outcome = longrun_sim.run(app.handler, {"bucket": "data"}, timeout_s=60)
        assert outcome.status == "completed", outcome.summary()
        assert outcome.result == {
            "prefixes": 12,
            "objects": sum(p % 4 + 1 for p in range(12)),
            "bytes": sum(sizes.values()),
            "failed": [],
        }
        # each prefix's summary was written once, by its own child run
        assert sorted(puts) == [f"summary/day-{p:02d}/summary.json" for p in range(12)]
        assert set(puts.values()) == {1}
        for p in range(12):
            got = s3.get_object(Bucket="data", Key=f"summary/day-{p:02d}/summary.json")
            assert json.loads(got["Body"].read())["bytes"] == sizes[f"raw/day-{p:02d}/"]
        assert len(longrun_sim.children) == 12
        assert {d["status"] for d in longrun_sim.children.values()} == {"completed"}
