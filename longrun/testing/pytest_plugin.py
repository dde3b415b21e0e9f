"""The longrun pytest plugin (entry point ``pytest11: longrun``).

Fixture ``longrun_sim``: a :class:`~longrun.testing.LambdaSim` on a fresh virtual clock::

    def test_job_survives_timeouts(longrun_sim):
        outcome = longrun_sim.run(handler, {"keys": keys}, timeout_s=60)
        assert outcome.status == "completed"
        assert len(outcome.hops) > 1

Only cheap imports at module top: pytest loads this plugin in every session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .sim import LambdaSim


@pytest.fixture
def longrun_sim() -> Iterator[LambdaSim]:
    """A simulated Lambda on virtual time that runs a ``@longrun`` handler hop after hop."""
    from .sim import LambdaSim

    yield LambdaSim()
