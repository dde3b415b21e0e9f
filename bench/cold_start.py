"""Cold start: ``import longrun`` against ``import boto3``, in fresh interpreters.

Each import runs in a new ``python -X importtime`` process (REPEAT times, interleaved); the
figure is the median cumulative import time of the top-level package, and the ratio
longrun / boto3. A last process proves that ``import longrun`` imports no boto3/botocore.

Both packages are first compiled to bytecode, as ``pip install`` leaves them in a deployment
package (an editable install under ``PYTHONDONTWRITEBYTECODE`` would otherwise recompile
longrun from source in every process, which no deployed function does).

    python bench/cold_start.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any


def import_us(module: str) -> int:
    """Cumulative microseconds of ``import module`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    raise RuntimeError(f"no importtime line for {module}")


def boto_modules_after_import() -> list[str]:
    code = (
        "import sys, json, longrun; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('boto3', 'botocore'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def compile_packages() -> None:
    import compileall
    import importlib.util

    for name in ("longrun", "boto3", "botocore"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                compileall.compile_dir(location, quiet=1)


def run_all(repeat: int) -> dict[str, Any]:
    compile_packages()
    longrun_us: list[int] = []
    boto3_us: list[int] = []
    for _ in range(repeat):
        longrun_us.append(import_us("longrun"))
        boto3_us.append(import_us("boto3"))
    ours, theirs = statistics.median(longrun_us), statistics.median(boto3_us)
    return {
        "name": "cold_start",
        "import_longrun_ms": round(ours / 1000, 1),
        "import_boto3_ms": round(theirs / 1000, 1),
        "ratio": round(ours / theirs, 3),
        "boto_modules_imported_by_longrun": boto_modules_after_import(),
        "repeat": repeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    row = run_all(args.repeat)
    print(
        f"import longrun: {row['import_longrun_ms']} ms, import boto3: {row['import_boto3_ms']} ms "
        f"(x{row['ratio']}); boto3/botocore modules after import longrun: "
        f"{row['boto_modules_imported_by_longrun'] or 'none'}"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
