"""A Lambda context on the real monotonic clock, for tests that hand off through a real
Invoke endpoint (imported by test modules as ``from realtime import RealTimeContext``)."""

from __future__ import annotations

import time
import uuid
from typing import Any


class RealTimeContext:
    """The Lambda context fields longrun reads, on the real monotonic clock."""

    def __init__(
        self,
        timeout_s: float,
        *,
        arn: str,
        request_id: str | None = None,
        tenant_id: Any = None,
    ) -> None:
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.invoked_function_arn = arn
        self.function_name = arn.split(":")[6]
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = "1024"
        self.tenant_id = tenant_id
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
