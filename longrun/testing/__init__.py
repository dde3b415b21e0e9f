"""Testing support: a virtual-time Lambda simulator and the ``longrun_sim`` pytest fixture.

Runtime code never imports this package; the pytest plugin lives in ``pytest_plugin``.
"""

from .clock import HopKilled, VirtualClock
from .context import FakeContext
from .sim import Delivery, Faults, HopRecord, LambdaSim, Outcome, SimulatedCrash

__all__ = [
    "Delivery",
    "FakeContext",
    "Faults",
    "HopKilled",
    "HopRecord",
    "LambdaSim",
    "Outcome",
    "SimulatedCrash",
    "VirtualClock",
]
