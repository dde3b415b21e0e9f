"""Testing support: a virtual-time Lambda simulator, the local emulator, pytest fixtures.

Runtime code never imports this package; the pytest plugin lives in ``pytest_plugin``. Names
are imported on first use, so that the plugin, loaded in every pytest session, stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .clock import HopKilled, VirtualClock
    from .context import FakeContext
    from .delivery import AsyncDelivery, Delivery
    from .sim import Faults, HopRecord, LambdaSim, Outcome, SimulatedCrash
    from .transport import RecordingTransport

__all__ = [
    "AsyncDelivery",
    "Delivery",
    "FakeContext",
    "Faults",
    "HopKilled",
    "HopRecord",
    "LambdaSim",
    "Outcome",
    "RecordingTransport",
    "SimulatedCrash",
    "VirtualClock",
]

_WHERE = {
    "HopKilled": "clock",
    "VirtualClock": "clock",
    "FakeContext": "context",
    "AsyncDelivery": "delivery",
    "Delivery": "delivery",
    "Faults": "sim",
    "HopRecord": "sim",
    "LambdaSim": "sim",
    "Outcome": "sim",
    "SimulatedCrash": "sim",
    "RecordingTransport": "transport",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'longrun.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
