"""The benchmark code runs (on tiny sizes); no timing is asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmarks_run_and_write_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "bench/run_all.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(out.read_text())
    figures = {entry["figure"] for entry in document["results"]}
    assert figures == {1, 2, 3, 4, 5, 6, 7, 8, 9}
    for entry in document["results"]:
        assert {"name", "value", "unit", "conditions"} <= set(entry)
    by_name = {entry["name"]: entry for entry in document["results"]}
    # Facts, not speeds: boto3 stays out of `import longrun`, and the runs completed.
    assert by_name["import_longrun_over_import_boto3"]["boto_modules_imported_by_longrun"] == []
    assert by_name["kills[constant/adaptive]"]["value"] == 0
