"""The README's own handler, copied as it is into a new folder, passes a ``longrun_sim`` test
in a real pytest session and runs to completion under ``longrun local``.

It names a production store, ``S3Store("my-bucket", prefix="longrun/")``: neither harness may
need AWS credentials for it (the simulator checkpoints in memory by default, the emulator to
its own store).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_handler() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Decorate a handler") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README has no handler example"
    code = match.group(1)
    assert 'S3Store("my-bucket"' in code  # the production store this test is about
    return code


def no_aws(env: dict[str, str]) -> dict[str, str]:
    """The environment without AWS credentials or endpoints: nothing may reach AWS."""
    return {
        k: v
        for k, v in env.items()
        if not k.startswith(("AWS_", "LONGRUN_")) and k not in ("BOTO_CONFIG",)
    } | {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def test_readme_handler_passes_a_longrun_sim_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "app.py").write_text(readme_handler())
    pytester.makepyfile(
        test_app='''
import time
from collections import Counter

import app


def test_the_readme_job(longrun_sim, monkeypatch):
    ran = Counter()

    def process(key):  # the README's placeholder, made to take time (virtual) and count
        ran[key] += 1
        time.sleep(20)

    monkeypatch.setattr(app, "process", process)
    keys = [f"logs/{i:04}.gz" for i in range(100)]
    outcome = longrun_sim.run(app.handler, {"keys": keys}, timeout_s=300)
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == {"done": 100}
    assert len(outcome.hops) > 5
    assert sorted(ran) == keys and set(ran.values()) == {1}
'''
    )
    env = no_aws(dict(os.environ))
    for name in [k for k in os.environ if k not in env]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_readme_handler_runs_to_completion_under_longrun_local(tmp_path: Path) -> None:
    folder = tmp_path / "myjob"
    folder.mkdir()
    (folder / "app.py").write_text(readme_handler())
    keys = [f"logs/{i:04}.gz" for i in range(30)]
    (folder / "event.json").write_text(json.dumps({"keys": keys}))
    result = subprocess.run(
        [
            sys.executable, "-m", "longrun.cli", "local", "app.py:handler",
            "--event", "event.json", "--timeout", "5", "--workdir", str(tmp_path / "work"),
            "--json",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        env=no_aws(dict(os.environ)) | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [run] = json.loads(result.stdout)["runs"]
    assert run["status"] == "completed"
    assert run["result"] == {"done": 30}
