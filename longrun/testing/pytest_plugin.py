"""The longrun pytest plugin (entry point ``pytest11: longrun``).

Fixture ``longrun_sim``: a :class:`~longrun.testing.LambdaSim` on a fresh virtual clock::

    def test_job_survives_timeouts(longrun_sim):
        outcome = longrun_sim.run(handler, {"keys": keys}, timeout_s=60)
        assert outcome.status == "completed"
        assert len(outcome.hops) > 1

Fixture ``longrun_local``: a started :class:`~longrun.testing.emulator.LocalLambda`, the
process-level emulator (real ``awslambdaric`` processes killed at their deadline), stopped at
teardown::

    def test_job_on_the_emulator(longrun_local):
        fn = longrun_local.deploy("app.py:handler", timeout_s=2, max_hops=3)
        run_id = longrun_local.invoke(fn, {"records": 400})
        report = longrun_local.wait(timeout=60)
        assert report.run(run_id).status == "completed"

Only cheap imports at module top: pytest loads this plugin in every session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .emulator import LocalLambda, MotoServer
    from .sim import LambdaSim


@pytest.fixture
def longrun_sim() -> Iterator[LambdaSim]:
    """A simulated Lambda on virtual time that runs a ``@longrun`` handler hop after hop."""
    from .sim import LambdaSim

    yield LambdaSim()


@pytest.fixture(scope="session")
def longrun_local_moto() -> Iterator[MotoServer]:
    """One moto server (S3, ECS, EC2) for the session's emulators, started on first need."""
    from .emulator import MotoServer

    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def longrun_local(tmp_path: Path, longrun_local_moto: MotoServer) -> Iterator[LocalLambda]:
    """The local Lambda emulator: ``deploy`` a handler from a path, ``invoke`` it, ``wait``
    for the run to settle and read the report. Every process it started is killed at
    teardown; checkpoints go under ``tmp_path`` (or to S3 in the session's moto)."""
    from .emulator import LocalLambda

    emulator = LocalLambda(workdir=tmp_path / "longrun-local", moto=longrun_local_moto)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
