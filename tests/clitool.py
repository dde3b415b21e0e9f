"""The ``longrun`` command as a subprocess, for the tests that run it."""

from __future__ import annotations

import os
import subprocess
import sys


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m longrun.cli ARGS`` with ``env`` over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "longrun.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
