"""The examples run as users run them: as real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_etl_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "examples/etl/demo.py", "--objects", "40", "--timeout", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified: every object processed exactly once" in result.stdout
    assert "40/40 objects written" in result.stdout
    hops = [line for line in result.stdout.splitlines() if line.startswith(("start", "hop "))]
    assert len(hops) >= 4 and hops[-1].endswith("completed")
    assert "HTTP/1.1" not in result.stdout + result.stderr

